"""
C{python -m soak}: run the soak tool.
"""

from soak.run import main

raise SystemExit(main())
