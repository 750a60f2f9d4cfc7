"""
README.rst's own commands work as a new user would paste them: the quick
start, on a copy of this checkout, with Debian's C{/usr/bin/python3} first
on C{PATH} (which refuses C{pip install} outside a virtual environment), and
the Syncthing example's configuration.

The commands are read from README.rst, not copied here, so the test follows
the README and fails when the README stops working.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from demux.testing import releasePort, reservePort

from ._process import waitForPort

ROOT = Path(__file__).parent.parent
DEBIAN_PYTHON = Path("/usr/bin/python3")
DEMO_PORT = 8080


def literalBlock(text: str, after: str) -> list[str]:
    """
    The lines of the first literal block (C{::} then an indented block) in
    the section of C{text} headed C{after}.
    """
    heading = re.search(rf"^{re.escape(after)}\n[=~-]+\n", text, re.M)
    assert heading is not None, f"no section {after!r}"
    section = text[heading.end() :]
    match = re.search(r"::\n\n((?:    .*\n|\n)+)", section)
    assert match is not None, f"no literal block under {after!r}"
    return [line.strip() for line in match.group(1).splitlines() if line.strip()]


def test_literalBlock() -> None:
    """
    The reader finds the block it is asked for, and only that one.
    """
    text = "Intro\n=====\n\nx::\n\n    one\n    two\n\nB\n=\n\ny::\n\n    three\n"
    assert literalBlock(text, "Intro") == ["one", "two"]
    assert literalBlock(text, "B") == ["three"]


def quickStart() -> str:
    lines = literalBlock((ROOT / "README.rst").read_text(), "Quick start")
    assert len(lines) == 1, f"the quick start is not one line: {lines}"
    return lines[0]


def copyOfCheckout(destination: Path) -> Path:
    """
    The files git knows of in this checkout (with their changes), as a
    fresh clone would have them, without anything installed or built here.
    """
    files = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT, capture_output=True, check=True,
    ).stdout.split(b"\0")
    for name in filter(None, files):
        source = ROOT / name.decode()
        if source.is_file():
            target = destination / name.decode()
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    return destination


@pytest.fixture(scope="module")
def quickStarted(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str]]:
    """
    The quick start's command running in a copy of the checkout, with
    Debian's python3 first on PATH; yields the copy and the command's output
    so far, once the demo answers.
    """
    if not DEBIAN_PYTHON.exists():
        pytest.skip("no /usr/bin/python3 (not Debian or Ubuntu)")
    checkout = copyOfCheckout(tmp_path_factory.mktemp("readme") / "demux")
    # The demo's port is fixed by its configuration: reserve it as every
    # test's port is, so that no other test run can be handed it meanwhile.
    # Another test run on this machine may hold it a while: wait for it.
    deadline = time.monotonic() + 300
    while True:
        try:
            assert reservePort(candidates=[DEMO_PORT]) == DEMO_PORT
            break
        except RuntimeError:
            if time.monotonic() > deadline:
                raise
            time.sleep(1)
    environment = {
        **os.environ,
        "PATH": f"{DEBIAN_PYTHON.parent}:{os.environ.get('PATH', '')}",
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
    }
    for name in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME", "PYENV_VERSION"):
        environment.pop(name, None)
    output = checkout / "quickstart.log"
    with output.open("wb") as log:
        process = subprocess.Popen(
            ["sh", "-c", quickStart()], cwd=checkout, env=environment,
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
    try:
        try:
            waitForPort(DEMO_PORT, timeout=300)
        except TimeoutError:
            raise AssertionError(
                f"the quick start did not serve the demo:\n{output.read_text()}"
            ) from None
        yield checkout, output.read_text()
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        releasePort(DEMO_PORT)


def test_quickStartWithDebianPython(quickStarted: tuple[Path, str]) -> None:
    """
    The quick start installs demux with Debian's python3 (no
    C{externally-managed-environment} refusal), says where it went and how
    to run it again, and serves the demo page to curl.
    """
    checkout, output = quickStarted
    assert "externally-managed-environment" not in output
    assert "run it again with .venv/bin/twistd -n demux" in output, output
    base = subprocess.run(
        [str(checkout / ".venv" / "bin" / "python"), "-c",
         "import sys; print(sys.base_prefix)"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()
    assert base == "/usr", base
    deadline = time.monotonic() + 30
    while True:
        page = subprocess.run(
            ["curl", "-sS", "--max-time", "10", f"http://127.0.0.1:{DEMO_PORT}/"],
            capture_output=True, text=True,
        )
        if page.returncode == 0 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert page.returncode == 0, page.stderr
    assert "Hello from demux's demo web site." in page.stdout, page.stdout


def test_syncthingExampleChecks(quickStarted: tuple[Path, str]) -> None:
    """
    The README's command for the Syncthing example, with C{--check}, accepts
    C{examples/syncthing.toml} in the environment the quick start made.
    """
    checkout, _ = quickStarted
    text = (ROOT / "README.rst").read_text()
    commands = [
        line.strip() for line in text.splitlines()
        if "--config examples/syncthing.toml" in line
    ]
    assert commands, "README.rst has no command for examples/syncthing.toml"
    argv = shlex.split(commands[0]) + ["--check"]
    result = subprocess.run(
        argv, cwd=checkout, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "relay-session" in result.stdout + result.stderr
