"""
The rules between demux's parts, read from the code's imports with C{ast}:

  - deciding (the matchers, L{demux._routes.decide}, L{demux._peek}) imports
    no transport, relay, dialler or reactor, not even indirectly;
  - no two demux modules import each other, however indirectly: counting
    imports at module level, inside functions (made lazily to dodge a
    cycle) and under C{TYPE_CHECKING} (which hide a cycle from the
    interpreter, not from a reader), with no exception.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

import demux

PACKAGE = Path(demux.__file__).parent

# What deciding may never reach.
TRANSPORTS = {
    "demux._relay",
    "demux._session",
    "demux._splice",
    "demux._twisted",
    "demux._dial",
    "demux._targets",
    "demux._protocol",
    "twisted.internet.tcp",
    "twisted.internet.reactor",
    "twisted.internet.endpoints",
    "twisted.internet.protocol",
}


def _moduleName(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _typeCheckingNodes(tree: ast.AST) -> set[int]:
    """
    The ids of the import nodes under an C{if TYPE_CHECKING:}.
    """
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for inner in node.body:
                for sub in ast.walk(inner):
                    found.add(id(sub))
    return found


def _imports(path: Path, modules: set[str]) -> Iterator[tuple[str, bool]]:
    """
    The modules C{path} imports (demux's own, and any other by its full
    name), each with whether the import is for annotations only.
    """
    name = _moduleName(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    tree = ast.parse(path.read_text())
    typing = _typeCheckingNodes(tree)
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            submodules = [f"{target}.{a.name}" for a in node.names]
            inside = [m for m in submodules if m in modules]
            # "from . import _splice" imports the submodule; "from ._x
            # import y" imports the module _x.
            for found in inside or [target]:
                yield found, id(node) in typing
            for a in node.names:
                yield f"{target}.{a.name}", id(node) in typing
        elif isinstance(node, ast.Import):
            for a in node.names:
                yield a.name, id(node) in typing


def importGraph() -> dict[str, dict[str, bool]]:
    """
    demux's modules, each with what it imports and whether only for
    annotations (C{True} when every import of that module is).
    """
    paths = {_moduleName(p): p for p in PACKAGE.rglob("*.py")}
    modules = set(paths)
    graph: dict[str, dict[str, bool]] = {}
    for name, path in paths.items():
        edges: dict[str, bool] = {}
        for target, onlyTyping in _imports(path, modules):
            if target != name:
                edges[target] = edges.get(target, True) and onlyTyping
        graph[name] = edges
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """
    The strongly connected groups of more than one module (Tarjan's
    algorithm, iteratively).
    """
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    onStack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        onStack.add(root)
        while work:
            node, children = work[-1]
            for child in children:
                if child not in graph:
                    continue
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    onStack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                    break
                if child in onStack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[node])
                if low[node] == index[node]:
                    group = []
                    while True:
                        member = stack.pop()
                        onStack.discard(member)
                        group.append(member)
                        if member == node:
                            break
                    if len(group) > 1:
                        found.append(sorted(group))
    return found


def _reach(graph: dict[str, dict[str, bool]], start: str) -> dict[str, str]:
    """
    Everything C{start} imports at run time, directly or not, each with the
    module that imports it (to say how it is reached).
    """
    seen: dict[str, str] = {}
    todo = [start]
    while todo:
        here = todo.pop()
        for target, onlyTyping in graph.get(here, {}).items():
            if not onlyTyping and target not in seen and target != start:
                seen[target] = here
                todo.append(target)
    return seen


class LayeringTests(SynchronousTestCase):
    def test_noCycles(self) -> None:
        """
        No import cycle among demux's modules, lazy and annotation-only
        imports included.
        """
        graph = importGraph()
        demuxOnly = {
            name: {t for t in edges if t in graph} for name, edges in graph.items()
        }
        found = cycles(demuxOnly)
        described = [
            " <-> ".join(group)
            + ": "
            + "; ".join(
                f"{a} -> {b}"
                for a in group
                for b in sorted(demuxOnly[a] & set(group))
            )
            for group in found
        ]
        self.assertEqual(described, [])

    def test_cyclesFound(self) -> None:
        """
        The cycle finder finds a cycle (so that the test above can fail).
        """
        self.assertEqual(
            cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}),
            [["a", "b", "c"]],
        )

    def test_decidingImportsNoTransport(self) -> None:
        """
        The matchers, the decision and the peek reach no transport, relay,
        dialler or reactor.
        """
        graph = importGraph()
        deciding = [
            name
            for name in graph
            if name.startswith("demux.matchers")
            or name in ("demux._routes", "demux._peek", "demux._interfaces")
        ]
        self.assertIn("demux.matchers._tls", deciding)
        bad = []
        for name in sorted(deciding):
            reached = _reach(graph, name)
            for forbidden in sorted(TRANSPORTS & set(reached)):
                bad.append(f"{name} reaches {forbidden} (through {reached[forbidden]})")
        self.assertEqual(bad, [])
