"""
The built-in matchers.  Each is a plugin registered in the C{demux.matchers}
entry-point group exactly as a third party's would be; the objects here are
for building route tables from Python.
"""

from ._any import AnyMatcher, anyFactory

__all__ = ["AnyMatcher", "anyFactory"]
