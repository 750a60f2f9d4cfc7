"""
The soak and abuse tool for demux: long runs of mixed, slow and hostile
traffic against a running demux, checked byte for byte.

Run it from the project root with C{python -m soak} (see L{soak.run}); it
sits beside C{bench/} and is not installed with demux.
"""
