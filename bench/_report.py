"""
Turning the raw samples into medians, a table with ratios, JSON and a plot.
"""

from __future__ import annotations

import json
import statistics
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path

# metric key -> (label, unit, higher is better)
METRICS: dict[str, tuple[str, str, bool]] = {
    "bulk-up": ("bulk client->backend", "MB/s", True),
    "bulk-down": ("bulk backend->client", "MB/s", True),
    "cpu-up": ("proxy CPU, client->backend", "s/GB", False),
    "cpu-down": ("proxy CPU, backend->client", "s/GB", False),
    "rate-sni-c1": ("conn/s ClientHello, c=1", "conn/s", True),
    "rate-sni-c50": ("conn/s ClientHello, c=50", "conn/s", True),
    "rate-magic-c1": ("conn/s magic, c=1", "conn/s", True),
    "rate-magic-c50": ("conn/s magic, c=50", "conn/s", True),
    "http-c50": ("HTTP keep-alive req/s, wrk c=50", "req/s", True),
    "http-cpu": ("proxy CPU per keep-alive request", "us", False),
    "https-c50": ("HTTPS ended by the proxy, req/s, wrk c=50", "req/s", True),
    "https-cpu": ("proxy CPU per HTTPS request it ends", "us", False),
    "ttfb-magic-p50": ("time to first byte, magic, p50", "us", False),
    "ttfb-magic-p99": ("time to first byte, magic, p99", "us", False),
    "ttfb-sni-p50": ("time to first byte, ClientHello, p50", "us", False),
    "ttfb-sni-p99": ("time to first byte, ClientHello, p99", "us", False),
    "mem-relayed": ("memory per idle relayed conn", "bytes", False),
    "mem-undecided": ("memory per undecided conn", "bytes", False),
    "fds-relayed": ("descriptors per relayed conn", "fds", False),
}


def medians(records: Iterable[dict]) -> dict[str, dict[str, float]]:
    """
    The median of each metric for each proxy: C{{metric: {proxy: value}}}.
    """
    grouped: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for record in records:
        grouped[record["metric"]][record["proxy"]].append(record["value"])
    return {
        metric: {proxy: statistics.median(values) for proxy, values in byProxy.items()}
        for metric, byProxy in grouped.items()
    }


def _format(value: float | None) -> str:
    if value is None:
        return "-"
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def table(
    summary: dict[str, dict[str, float]],
    proxies: list[str],
    baselines: Iterable[str] = (),
) -> str:
    """
    A plain-text table of medians, then one of ratios: each proxy against
    HAProxy, against sslh-fork where both ran, and against each baseline
    revision of demux (a C{demux@REV} column) when there is one. A ratio
    above 1 is always better for the proxy in the column (inverted for
    costs).
    """
    rows = [["metric", "unit", *proxies]]
    for metric, (label, unit, _) in METRICS.items():
        if metric in summary:
            rows.append([label, unit, *(_format(summary[metric].get(p)) for p in proxies)])
    others = [p for p in proxies if p != "direct"]
    references = [r for r in ("haproxy", "sslh-fork", *baselines) if r in proxies]
    ratioRows = [["metric (x better than ref)", "ref", *others]]
    for metric, (label, _, higherBetter) in METRICS.items():
        byProxy = summary.get(metric, {})
        for reference in references:
            ref = byProxy.get(reference)
            if not ref:
                continue
            cells = []
            for p in others:
                value = byProxy.get(p)
                if value is None or value == 0:
                    cells.append("-")
                else:
                    ratio = value / ref if higherBetter else ref / value
                    cells.append(f"{ratio:.2f}x")
            ratioRows.append([label, reference, *cells])
    return _render(rows) + "\n\n" + _render(ratioRows)


def _render(rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for index, row in enumerate(rows):
        cells = [
            cell.ljust(widths[i]) if i < 2 else cell.rjust(widths[i])
            for i, cell in enumerate(row)
        ]
        lines.append("  ".join(cells).rstrip())
        if index == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def rstTable(summary: dict[str, dict[str, float]], proxies: list[str]) -> str:
    """
    The medians as a reStructuredText C{list-table} for the docs.
    """
    lines = [".. list-table::", "   :header-rows: 1", ""]
    lines.append("   * - metric")
    for p in proxies:
        lines.append(f"     - {p}")
    for metric, (label, unit, _) in METRICS.items():
        if metric not in summary:
            continue
        lines.append(f"   * - {label} ({unit})")
        for p in proxies:
            lines.append(f"     - {_format(summary[metric].get(p))}")
    return "\n".join(lines)


def writeJson(path: Path, document: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2, sort_keys=True))


def plot(summary: dict[str, dict[str, float]], proxies: list[str], path: Path) -> bool:
    """
    Bar charts of bulk throughput and connection rates per proxy; returns
    L{False} when matplotlib is missing.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    panels = [
        ("Bulk throughput (MB/s)", ["bulk-up", "bulk-down"]),
        ("Connections per second", ["rate-sni-c1", "rate-sni-c50", "rate-magic-c1", "rate-magic-c50"]),
        ("HTTP keep-alive requests per second", ["http-c50"]),
    ]
    panels = [(t, [m for m in ms if m in summary]) for t, ms in panels]
    panels = [(t, ms) for t, ms in panels if ms]
    figure, axes = plt.subplots(len(panels), 1, figsize=(9, 3.4 * len(panels)))
    if len(panels) == 1:
        axes = [axes]
    for axis, (title, metrics) in zip(axes, panels, strict=True):
        width = 0.8 / len(metrics)
        for i, metric in enumerate(metrics):
            values = [summary[metric].get(p, 0.0) for p in proxies]
            positions = [x + i * width for x in range(len(proxies))]
            axis.bar(positions, values, width, label=METRICS[metric][0])
        axis.set_xticks([x + width * (len(metrics) - 1) / 2 for x in range(len(proxies))])
        axis.set_xticklabels(proxies)
        axis.set_title(title)
        axis.legend(fontsize="small")
        axis.grid(axis="y", alpha=0.3)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return True
