"""
C{twistd demux} is found after a regular install and after an editable one,
each in a fresh virtual environment that sees nothing of this one, run from
a directory outside the project.
"""

from __future__ import annotations

import os
import subprocess
import sys
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent


def freshInstall(directory: Path, *pipArgs: str) -> Path:
    venv.EnvBuilder(with_pip=False).create(directory)
    python = directory / "bin" / "python"
    result = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "-q",
         "--prefer-binary", *pipArgs],
        capture_output=True,
        timeout=600,
        env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"},
    )
    assert result.returncode == 0, result.stderr.decode()
    return python


def listMatchers(python: Path, cwd: Path) -> str:
    result = subprocess.run(
        [str(python.parent / "twistd"), "demux", "--list-matchers"],
        capture_output=True,
        timeout=60,
        cwd=cwd,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout.decode()


@pytest.mark.parametrize("editable", [False, True], ids=["regular", "editable"])
def test_twistdFindsDemux(tmp_path: Path, editable: bool) -> None:
    # Install from the committed tree, so the test neither writes into the
    # project nor depends on what lies uncommitted in it.
    source = tmp_path / "src"
    source.mkdir()
    archive = subprocess.run(
        ["git", "archive", "--format=tar", "HEAD"], cwd=ROOT, capture_output=True,
        check=True,
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(source)], input=archive, check=True)
    args = ["-e", str(source)] if editable else [str(source)]
    python = freshInstall(tmp_path / "venv", *args)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    listing = listMatchers(python, elsewhere)
    for name in ("any", "tls", "prefix", "http", "ssh", "regex"):
        assert f"\n{name} " in "\n" + listing, listing
