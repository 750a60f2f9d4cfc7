"""
C{python -m bench}: run the benchmark.
"""

from bench.run import main

raise SystemExit(main())
