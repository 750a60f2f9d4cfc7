"""
The demux benchmark: demux against HAProxy, sslh and a direct connection on
loopback, with the same backends and load generators for every proxy.

Run it from the project root with C{python -m bench} (see C{README.rst}).
"""
