"""
Matcher plugins: found through the C{demux.matchers} entry-point group,
built-in and third-party alike, checked against the interface, duplicates
refused.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import venv
from importlib.metadata import EntryPoint
from pathlib import Path

import pytest
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from demux import (
    ENTRY_POINT_GROUP,
    DuplicateMatcherError,
    IMatcher,
    IMatcherFactory,
    UnknownMatcherError,
    findMatcherFactory,
    matcherFactories,
)
from demux.matchers import anyFactory

from ._process import freePort, runDemux
from ._servers import TagServer, recvAll

BUILT_IN = {"any", "tls", "prefix", "http", "http2", "ssh", "regex",
            "xmpp",
            "rdp",
            "tinc",
            "adb",
            "bep", "relay-protocol", "relay-session",
            "openvpn", "socks", "postgres", "mqtt", "redis", "syslog",
            "proxy_protocol"}


class impostorAny:
    """
    A factory that calls itself C{any}, for the duplicate test.
    """

    name = "any"
    summary = "Not the real any."

    @staticmethod
    def build(options: object) -> IMatcher:
        raise NotImplementedError()


notAFactory = object()


def entryPoint(name: str, value: str) -> EntryPoint:
    return EntryPoint(name=name, value=value, group=ENTRY_POINT_GROUP)


class DiscoveryTests(SynchronousTestCase):
    def test_builtInsFoundAsPlugins(self) -> None:
        factories = matcherFactories()
        self.assertTrue(BUILT_IN <= set(factories), set(factories))
        for name, factory in factories.items():
            verifyObject(IMatcherFactory, factory)
            self.assertEqual(factory.name, name)
            self.assertTrue(factory.summary)

    def test_duplicateNamesBoth(self) -> None:
        e = self.assertRaises(
            DuplicateMatcherError,
            matcherFactories,
            [
                entryPoint("any", "demux.matchers._any:anyFactory"),
                entryPoint("any", "tests.test_plugins:impostorAny"),
            ],
        )
        self.assertIn("demux.matchers._any:anyFactory", str(e))
        self.assertIn("tests.test_plugins:impostorAny", str(e))

    def test_sameEntryPointTwiceIsFine(self) -> None:
        ep = entryPoint("any", "demux.matchers._any:anyFactory")
        self.assertEqual(matcherFactories([ep, ep]), {"any": anyFactory})

    def test_notAFactory(self) -> None:
        e = self.assertRaises(
            DuplicateMatcherError,
            matcherFactories,
            [entryPoint("x", "tests.test_plugins:notAFactory")],
        )
        self.assertIn("does not provide IMatcherFactory", str(e))

    def test_nameMismatch(self) -> None:
        e = self.assertRaises(
            DuplicateMatcherError,
            matcherFactories,
            [entryPoint("other", "demux.matchers._any:anyFactory")],
        )
        self.assertIn("calls itself 'any'", str(e))

    def test_unknown(self) -> None:
        e = self.assertRaises(UnknownMatcherError, findMatcherFactory, "nope", {"any": anyFactory})
        self.assertIn("unknown matcher 'nope' (installed matchers: any)", str(e))


HELLO_PLUGIN = Path(__file__).parent / "data" / "hello-plugin"


@pytest.fixture(scope="module")
def pluginVenv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """
    A virtual environment that sees this interpreter's packages (demux as
    installed) plus a third-party matcher distribution installed into it.

    It sees them through a C{.pth} file naming this interpreter's own
    site directories, not through C{system_site_packages}: when the tests
    run in a virtual environment, that would show the base interpreter's
    packages instead of this one's.
    """
    directory = tmp_path_factory.mktemp("plugin-venv")
    venv.EnvBuilder(with_pip=False).create(directory)
    python = directory / "bin" / "python"
    inner = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True, capture_output=True, text=True,
    ).stdout.strip()
    outer = [p for p in sys.path if p.endswith(("site-packages", "dist-packages"))]
    # addsitedir, not a bare path, so that the .pth files there (an editable
    # install's among them) are read too.
    Path(inner, "_outer_site.pth").write_text(
        "".join(f"import site; site.addsitedir({p!r})\n" for p in outer)
    )
    subprocess.run(
        [
            sys.executable, "-m", "pip", "--python", str(python), "install", "-q",
            "--no-deps", "--no-build-isolation", str(HELLO_PLUGIN),
        ],
        check=True,
        capture_output=True,
        env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"},
    )
    return python


def test_thirdPartyMatcherThroughTwistd(pluginVenv: Path) -> None:
    """
    A matcher from a separately installed distribution routes a connection
    through C{twistd demux}, with no change to demux.
    """
    listed = subprocess.run(
        [str(pluginVenv), "-c", "from twisted.scripts.twistd import run; run()",
         "demux", "--list-matchers"],
        capture_output=True,
        timeout=60,
        cwd=pluginVenv.parent.parent,
    )
    assert b"hello            A greeting such as HELLO" in listed.stdout, listed
    backend = TagServer("hello-backend")
    port = freePort()
    try:
        config = f"""
listen = ["tcp:{port}:interface=127.0.0.1"]
[[routes]]
name = "greeting"
match.hello = {{greeting = "HOWDY "}}
backend = "tcp:127.0.0.1:{backend.port}"
"""
        with runDemux(config, port=port, python=str(pluginVenv)) as demux:
            with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
                s.sendall(b"HOWDY partner")
                s.shutdown(socket.SHUT_WR)
                assert recvAll(s) == b"TAG:hello-backend\nHOWDY partner"
            demux.waitForLog("route=greeting (hello)")
    finally:
        backend.close()
