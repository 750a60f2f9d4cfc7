"""
Shared pytest configuration for demux's tests.
"""

from __future__ import annotations

import pytest


def pytest_configure(config: pytest.Config) -> None:
    """
    Register the markers the suite uses, so C{-m} can select them and a typo
    is reported rather than ignored.
    """
    config.addinivalue_line(
        "markers",
        "e2e: end-to-end tests that start real third-party programs "
        "(select with -m e2e, leave out with -m 'not e2e')",
    )
