"""
A real browser over HTTP/3 through demux: headless Chromium, forced onto
QUIC, fetches a page from an aioquic server behind a C{twistd demux} UDP
listener.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from ._quic import H3Server
from .test_udp_quic import ASAP, quicRoute, udpDemux

pytestmark = pytest.mark.e2e

CHROMIUM = shutil.which("chromium")


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (tests/run installs it)")
def test_chromiumOverHTTP3(tmp_path: Path) -> None:
    """
    Chromium's QUIC reaches the aioquic server through demux's UDP route
    and renders its page.
    """
    assert CHROMIUM is not None
    name = "www.example.test"
    server = H3Server(name, tmp_path)
    try:
        config = ASAP + quicRoute(server)
        for demux in udpDemux(config):
            result = subprocess.run(
                [
                    CHROMIUM,
                    "--headless",
                    "--no-sandbox",
                    "--disable-gpu",
                    f"--origin-to-force-quic-on={name}:443",
                    f"--host-resolver-rules=MAP {name} 127.0.0.1:{demux.port}",
                    "--ignore-certificate-errors",
                    f"--ignore-certificate-errors-spki-list={server.spki}",
                    f"--user-data-dir={tmp_path / 'profile'}",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                    "--no-first-run",
                    "--dump-dom",
                    f"https://{name}/through-demux",
                ],
                capture_output=True,
                timeout=120,
            )
            assert b"served by www.example.test" in result.stdout, result.stderr[-2000:]
            assert b"/through-demux" in result.stdout
            assert "route=h3 (" in demux.log()
    finally:
        server.close()
