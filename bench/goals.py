"""Issue 23's goals, each with the value this run measured and PASS or MISS.

``handshake.py`` calls :func:`goal_rows` with the figures of one run and prints
them with :func:`print_goals`; a goal the run did not measure (``--only batch``)
is printed as such, never as a pass. :func:`print_budget` says what a throughput
goal asks of the CPU: every process shares this machine's cores, so a rate is at
most cores divided by the CPU one operation costs across all of them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

#: The goals of issue 23 (docs/performance.md, "Batch throughput").
STREAM_VS_SINGLE = 5.0
STREAM_VS_FASTMCP = 10.0
CPU_PER_HANDSHAKE_US = 1700.0
CLIENT_RSS_GROWTH_MB = 50.0
WORKER_RSS_MB = 100.0


@dataclass(frozen=True)
class Goal:
    what: str
    measured: str
    goal: str
    #: ``None``: not measured in this run.
    passed: bool | None

    def row(self) -> str:
        verdict = {True: "PASS", False: "MISS", None: "not measured"}[self.passed]
        return f"  {self.what:<58} {self.measured:>16}  {self.goal:<14} {verdict}"


@dataclass(frozen=True)
class Figures:
    """What one run measured (``None``: not measured)."""

    stream_rate: float | None = None
    single_peak: float | None = None
    fastmcp_peak: float | None = None
    single_p50_ms: float | None = None
    fastmcp_p50_ms: float | None = None
    cpu_per_handshake_us: float | None = None
    client_rss_growth_mb: float | None = None
    worker_rss_mb: Mapping[str, float] | None = None
    stream_calls: int = 20_000
    rss_calls: int = 100_000
    #: What the stream's execute batches asked for: Merkle receipts, the client default.
    stream_receipts: str = "merkle"


def goal_rows(f: Figures) -> list[Goal]:
    rows = []
    n = f"{f.stream_calls:,}"
    label = f"stream() of {n} ops ({f.stream_receipts} receipts) vs the single-call peak"
    if f.stream_rate is not None and f.single_peak:
        ratio = f.stream_rate / f.single_peak
        rows.append(Goal(label,
                         f"{ratio:.2f}x ({f.stream_rate:,.0f}/s)", f">= {STREAM_VS_SINGLE:g}x",
                         ratio >= STREAM_VS_SINGLE))  # fmt: skip
    else:
        rows.append(Goal(label, "-",
                         f">= {STREAM_VS_SINGLE:g}x", None))  # fmt: skip
    if f.stream_rate is not None and f.fastmcp_peak:
        ratio = f.stream_rate / f.fastmcp_peak
        rows.append(Goal("batch throughput vs FastMCP's peak",
                         f"{ratio:.2f}x ({f.fastmcp_peak:,.0f}/s)", f">= {STREAM_VS_FASTMCP:g}x",
                         ratio >= STREAM_VS_FASTMCP))  # fmt: skip
    else:
        rows.append(Goal("batch throughput vs FastMCP's peak", "-",
                         f">= {STREAM_VS_FASTMCP:g}x", None))  # fmt: skip
    if f.single_p50_ms is not None and f.fastmcp_p50_ms:
        ratio = f.single_p50_ms / f.fastmcp_p50_ms
        measured = f"{ratio:.2f}x ({f.single_p50_ms:.2f} ms)"
        rows.append(Goal("single-call p50 at c=1 vs FastMCP's p50", measured, "<= 1.0x",
                         ratio <= 1.0))  # fmt: skip
    else:
        rows.append(Goal("single-call p50 at c=1 vs FastMCP's p50", "-", "<= 1.0x", None))
    cpu = f.cpu_per_handshake_us
    rows.append(Goal("CPU per single handshake, all processes",
                     f"{cpu:,.0f} us" if cpu is not None else "-",
                     f"<= {CPU_PER_HANDSHAKE_US:,.0f} us",
                     None if cpu is None else cpu <= CPU_PER_HANDSHAKE_US))  # fmt: skip
    grown, workers = f.client_rss_growth_mb, f.worker_rss_mb
    m = f"{f.rss_calls:,}"
    rows.append(Goal(f"client RSS growth over a {m}-op stream()",
                     f"{grown:.1f} MB" if grown is not None else "-",
                     f"< {CLIENT_RSS_GROWTH_MB:g} MB",
                     None if grown is None else grown < CLIENT_RSS_GROWTH_MB))  # fmt: skip
    top = max(workers.values()) if workers else None
    rows.append(Goal(f"largest worker RSS after it ({_largest(workers)})",
                     f"{top:.0f} MB" if top is not None else "-", f"< {WORKER_RSS_MB:g} MB",
                     None if top is None else top < WORKER_RSS_MB))  # fmt: skip
    return rows


def _largest(workers: Mapping[str, float] | None) -> str:
    return max(workers, key=workers.__getitem__) if workers else "each worker"


def print_goals(rows: list[Goal]) -> None:
    print("\ngoals of issue 23 (this run):")
    for goal in rows:
        print(goal.row())


def print_budget(label: str, per: Mapping[str, float], goals: Mapping[str, float]) -> None:
    """What each throughput goal (name -> ops/s) asks of the CPU per operation, against
    ``per`` (µs per operation per process) measured in this run."""
    cores = os.cpu_count() or 1
    total = sum(per.values())
    print(f"\nCPU budget ({label}): {total:,.0f} us per operation across every process, "
          f"the client included, so {cores} cores cap it near "
          f"{cores / total * 1e6:,.0f}/s")  # fmt: skip
    for name, rate in goals.items():
        need = cores / rate * 1e6
        verdict = "within" if total <= need else f"{total / need:.1f}x over"
        print(f"  {name} ({rate:,.0f}/s) needs at most {need:,.0f} us: {verdict}")
    top = sorted(per.items(), key=lambda kv: -kv[1])[:4]
    print("  the largest shares: " + ", ".join(f"{n} {us:,.0f} us" for n, us in top))
