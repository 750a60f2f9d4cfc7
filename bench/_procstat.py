"""
What a proxy costs, read from C{/proc}: CPU time and memory of a process and
its children, and how many descriptors it holds.

A proxy may be one process (demux, HAProxy, sslh-select) or a parent that
forks a child per connection (sslh-fork), so every reading covers the whole
process tree.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

TICKS = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def _statFields(pid: int) -> list[str] | None:
    """
    The fields of C{/proc/PID/stat} after the command name, or L{None} if the
    process is gone.
    """
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read().decode(errors="replace")
    except OSError:
        return None
    # The command name may contain spaces and parentheses; it ends at the
    # last ')'.
    return raw[raw.rindex(")") + 2 :].split()


def children(pid: int) -> list[int]:
    """
    All live descendants of C{pid}.
    """
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        fields = _statFields(int(entry))
        if fields is not None:
            parents.setdefault(int(fields[1]), []).append(int(entry))
    found: list[int] = []
    todo = [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def tree(pid: int) -> Iterator[int]:
    """
    C{pid} and its live descendants.
    """
    yield pid
    yield from children(pid)


@dataclass(frozen=True)
class CpuSample:
    """
    CPU seconds of a process tree at one moment: the root's own time and the
    time of the children it has reaped, and each live descendant's own time.
    """

    root: float
    live: dict[int, float]

    def since(self, earlier: CpuSample) -> float:
        """
        CPU seconds spent between C{earlier} and this sample by the tree.

        Children that were born and died in between count only through the
        root's reaped-children time, so callers take the later sample while
        the connections they measure are still open.
        """
        spent = self.root - earlier.root
        for pid, seconds in self.live.items():
            spent += seconds - earlier.live.get(pid, 0.0)
        return spent


def cpuSample(pid: int) -> CpuSample:
    """
    Read the CPU time of C{pid}'s tree now.
    """
    fields = _statFields(pid)
    if fields is None:
        raise ProcessLookupError(pid)
    # utime, stime, cutime, cstime are fields 14-17 of stat, i.e. 11-14 here.
    root = sum(int(v) for v in fields[11:15]) / TICKS
    live = {}
    for child in children(pid):
        childFields = _statFields(child)
        if childFields is not None:
            live[child] = sum(int(v) for v in childFields[11:13]) / TICKS
    return CpuSample(root, live)


def _pss(pid: int) -> int:
    """
    Proportional set size of one process in bytes (0 if it is gone).
    """
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _rss(pid: int) -> int:
    """
    Resident set size of one process in bytes (0 if it is gone).
    """
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * PAGE
    except OSError:
        return 0


@dataclass(frozen=True)
class Memory:
    """
    Memory of a process tree: the sum of proportional set sizes (so pages
    that forked children share count once) and the sum of resident sizes.
    """

    pss: int
    rss: int
    processes: int


def memory(pid: int) -> Memory:
    """
    Read the memory of C{pid}'s tree now.
    """
    pids = list(tree(pid))
    return Memory(
        pss=sum(_pss(p) for p in pids),
        rss=sum(_rss(p) for p in pids),
        processes=len(pids),
    )


def openDescriptors(pid: int) -> int:
    """
    How many descriptors C{pid}'s tree holds open.
    """
    total = 0
    for p in tree(pid):
        try:
            total += len(os.listdir(f"/proc/{p}/fd"))
        except OSError:
            pass
    return total
