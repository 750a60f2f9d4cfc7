"""
The soak command (C{python -m soak}) works: a few seconds of it,
self-contained, report no error and no misroute, and the configuration it
prints for running against your own demux is one demux accepts.

The real soak is longer and run by hand::

    python -m soak --self-contained --duration 600
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from ._process import twistdCommand

ROOT = Path(__file__).parent.parent


def test_shortSoak() -> None:
    """
    Five seconds of mixed traffic through a demux the soak starts itself:
    every kind of client ran, every routed one landed on its route with its
    bytes intact, demux's memory and descriptors were sampled and its log
    holds no traceback.
    """
    result = subprocess.run(
        [
            sys.executable, "-m", "soak", "--self-contained",
            "--duration", "5", "--concurrency", "16", "--sample-interval", "1",
            "--seed", "4", "--json",
        ],
        cwd=ROOT,
        capture_output=True,
        timeout=90,
    )
    assert result.stdout, result.stderr.decode(errors="replace")
    report = json.loads(result.stdout.decode().strip().splitlines()[-1])
    print(
        f"\nsoak: {report['connections']} connections, {report['errors']} errors, "
        f"{report['misroutes']} misroutes, {report['bytesChecked']} bytes checked"
    )
    assert report["errors"] == 0, report["errorSamples"]
    assert report["misroutes"] == 0, report["errorSamples"]
    assert report["logProblems"] == 0
    assert report["connections"] >= 200
    assert report["bytesChecked"] > 0
    kinds = report["kinds"]
    for kind in ("tls-sni", "alpn-no-sni", "magic", "http", "junk", "unknown-sni"):
        assert kinds[kind]["ok"] > 0, (kind, kinds)
    assert len(report["samples"]) >= 3
    assert all(s["rss"] > 0 and s["fds"] > 0 for s in report["samples"])
    assert result.returncode == 0


def test_printedConfigurationIsValid(tmp_path: Path) -> None:
    """
    The configuration C{--print-config} writes, for a demux you start
    yourself, passes C{twistd demux --check} with every route.
    """
    printed = subprocess.run(
        [
            sys.executable, "-m", "soak", "--print-config",
            "--backend-base", "19100", "--listen", "tcp:8443:interface=127.0.0.1",
        ],
        cwd=ROOT,
        capture_output=True,
        timeout=30,
        check=True,
    )
    config = tmp_path / "soak.toml"
    config.write_bytes(printed.stdout)
    checked = subprocess.run(
        twistdCommand("-n", "demux", "--config", str(config), "--check"),
        cwd=tmp_path,
        capture_output=True,
        timeout=30,
    )
    assert checked.returncode == 0, checked.stderr
    assert b"5 routes (magic, tls-a, tls-b, relay, http)" in checked.stdout
