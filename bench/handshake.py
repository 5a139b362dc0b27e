"""Handshake throughput and latency, side by side with the limits, in one run.

Starts its own nats-server and redis-server on free ports and the whole stack
(authorization on, as shipped), then measures, on this machine, at concurrency
1, 16 and 64:

* raw nats-py request-reply echo on a plain nats-server of its own (the
  transport's limit);
* the full handshake through ``HandshakeClient.call`` (session JWT, authorize,
  atomic consume, acknowledged audit intent, signed dispatch, executor hop,
  signed and verified receipt, every audit event written to the log) on a
  function-target tool (an in-process function, exactly what the FastMCP
  baseline runs) and on the HTTP-target tool (an extra HTTP call to the demo
  target: the realistic row);
* a plain, unauthenticated FastMCP streamable-HTTP tool call (``[bench]`` extra).

Then the batch path: a ``HandshakeClient.stream`` of 100,000 calls (64 in
flight), printing the client's RSS growth and every worker's RSS after it; one
``stream`` of 20,000 function-target operations (``--batch-calls``, 1024 in
flight; the calls in flight go as ``authorize.batch`` and ``execute.batch``
requests of at most 128, each execute batch with Merkle receipts, the client's
default: one signed root per batch), its rate and its CPU per operation per process; and the
peak with one and with two processes of the worker kind that used the most CPU.
Prints every ratio in the same run, and issue 23's goals with PASS or MISS
(``goals.py``). Run: ``make bench``; only the batch part (the 20,000-operation
stream, and the single-call and FastMCP peaks it is compared with, at c=16 and 64):
``python bench/handshake.py --only batch``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import nats

from mcp_handshake.client import HandshakeClient
from mcp_handshake.services.dev.devhome import mint_session
from mcp_handshake.services.dev.devstack import Stack, StackSpec
from mcp_handshake.services.dev.procs import find_nats_server, free_port, wait_port
from mcp_handshake.shared.batchreceipt import ReceiptMode

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import benchtools  # noqa: E402 - the bench's own tool module, beside this file
import goals  # noqa: E402 - issue 23's goals, beside this file

FUNCTION_TOOL = "bench.exchange_rate"
HTTP_TOOL = "payments.get_exchange_rate"
RATE = {"base": "EUR", "quote": "USD"}
CLIENT = "bench client"
LEVELS = (1, 16, 64)
#: How long the stack may take to come up: a machine shared with other work can be slow.
START_TIMEOUT_S = 120.0


class Result:
    def __init__(self, name: str, concurrency: int, latencies: list[float], wall: float) -> None:
        self.name = name
        self.concurrency = concurrency
        self.n = len(latencies)
        self.rps = self.n / wall
        q = statistics.quantiles(latencies, n=100)
        self.p50 = q[49] * 1000
        self.p99 = q[98] * 1000

    def row(self) -> str:
        return (
            f"{self.name:<34} c={self.concurrency:<3} {self.n:>6} ops  "
            f"{self.rps:>9.0f}/s  p50 {self.p50:>7.3f} ms  p99 {self.p99:>7.3f} ms"
        )


async def warm_up(op: Callable[[], Awaitable[object]], concurrency: int) -> None:
    """Ten calls per loop at the measured concurrency: every pool (Redis connections,
    the audit outbox's window) grows to its working size before a window opens."""

    async def warm() -> None:
        for _ in range(10):
            await op()

    await asyncio.gather(*(warm() for _ in range(concurrency)))


async def measure(
    name: str,
    op: Callable[[], Awaitable[object]],
    concurrency: int,
    seconds: float,
    started: Callable[[], None] = lambda: None,
) -> Result:
    """``op`` run by ``concurrency`` loops for ``seconds`` after a warm-up at the same
    concurrency; ``started`` is called when the measured window opens."""
    await warm_up(op, concurrency)
    started()
    latencies: list[float] = []
    end = time.perf_counter() + seconds

    async def loop() -> None:
        while time.perf_counter() < end:
            t0 = time.perf_counter()
            await op()
            latencies.append(time.perf_counter() - t0)

    start = time.perf_counter()
    await asyncio.gather(*(loop() for _ in range(concurrency)))
    return Result(name, concurrency, latencies, time.perf_counter() - start)


async def bench_echo(seconds: float, levels: tuple[int, ...] = LEVELS) -> list[Result]:
    port = free_port()
    server = await asyncio.create_subprocess_exec(
        find_nats_server(), "-a", "127.0.0.1", "-p", str(port), stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    url = f"nats://127.0.0.1:{port}"
    wait_port(port, "nats-server")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(HERE / "echo_server.py"), url, stdout=asyncio.subprocess.PIPE
    )
    try:
        assert proc.stdout is not None
        await proc.stdout.readline()
        nc = await nats.connect(url)
        payload = b'{"tool":"payments.get_exchange_rate","params":{"base":"EUR","quote":"USD"}}'

        async def op() -> object:
            return await nc.request("bench.echo", payload, timeout=5)

        out = [await measure("nats-py echo (limit)", op, c, seconds) for c in levels]
        await nc.close()
        return out
    finally:
        for p in (proc, server):
            p.terminate()
            await p.wait()


async def bench_handshake(
    stack: Stack, tool: str, name: str, seconds: float, levels: tuple[int, ...] = LEVELS
) -> list[Result]:
    async with bench_client(stack) as hs:

        async def op() -> object:
            return await hs.call(tool, RATE)

        return [await measure(name, op, c, seconds) for c in levels]


async def start_fastmcp() -> tuple[Any, asyncio.subprocess.Process]:
    """The FastMCP baseline server (``fastmcp_server.py``) on a free port, and a client
    that has reached it once (not entered)."""
    from fastmcp import Client

    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(HERE / "fastmcp_server.py"),
        str(port),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    client = Client(f"http://127.0.0.1:{port}/mcp")
    for _ in range(100):
        try:
            async with client:
                break
        except Exception:
            await asyncio.sleep(0.1)
    return client, proc


async def bench_fastmcp(seconds: float, levels: tuple[int, ...] = LEVELS) -> list[Result]:
    try:
        import fastmcp  # noqa: F401
    except ImportError:
        print("(fastmcp not installed: pip install -e '.[bench]' for the baseline)")
        return []
    client, proc = await start_fastmcp()
    try:
        async with client:

            async def op() -> object:
                return await client.call_tool("get_exchange_rate", RATE)

            return [await measure("FastMCP tool call, no auth", op, c, seconds) for c in levels]
    finally:
        proc.terminate()
        await proc.wait()


def bench_client(stack: Stack, batch_receipts: ReceiptMode = "merkle") -> HandshakeClient:
    """A client for the bench's caller (alice, role billing) on ``stack``; its batches ask
    for ``batch_receipts`` (Merkle receipts, the client's default, unless told)."""
    token = mint_session(stack.home, "alice", roles=["billing"])
    return HandshakeClient(
        stack.nats_url or "", session=token, connect_options=stack.agent_options(),
        batch_receipts=batch_receipts,
    )  # fmt: skip


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def is_worker(name: str) -> bool:
    """A worker process of the stack (``execute-0``), not a server or the target."""
    return name.rsplit("-", 1)[-1].isdigit()


async def bench_stream(
    stack: Stack, calls: int, concurrency: int
) -> tuple[float, float, dict[str, float]]:
    """(calls/s, client RSS growth MB, worker RSS MB) of one stream() run of ``calls``."""
    async with bench_client(stack) as hs:
        await hs.call(FUNCTION_TOOL, RATE)
        before = rss_mb(os.getpid())
        start = time.perf_counter()
        failed = 0
        gen = ((FUNCTION_TOOL, RATE) for _ in range(calls))
        async for _, outcome in hs.stream(gen, concurrency=concurrency):
            failed += not hasattr(outcome, "receipt")
        wall = time.perf_counter() - start
        grown = rss_mb(os.getpid()) - before
    if failed:
        print(f"(stream: {failed} calls failed)")
    workers = {p.name: rss_mb(p.popen.pid) for p in stack.procs if is_worker(p.name)}
    return calls / wall, grown, workers


@dataclass
class BatchRun:
    """One stream() of the function target: its rate and CPU per operation per process."""

    calls: int
    concurrency: int
    rate: float
    per: dict[str, float]
    failed: int
    #: Each worker's RSS (MB) after it.
    rss: dict[str, float]


async def bench_batch(stack: Stack, calls: int, concurrency: int) -> BatchRun:
    """A ``stream()`` of ``calls`` function-target operations (after a warm-up stream at the
    same concurrency), timed, with every process's CPU per operation over it."""
    pids = {p.name: p.popen.pid for p in stack.procs}
    pids[CLIENT] = os.getpid()
    async with bench_client(stack) as hs:

        async def run(n: int) -> int:
            failed = 0
            gen = ((FUNCTION_TOOL, RATE) for _ in range(n))
            async for _, outcome in hs.stream(gen, concurrency=concurrency):
                failed += not hasattr(outcome, "receipt")
            return failed

        await run(min(calls, 10 * concurrency))
        before = {n: cpu_seconds(pid) for n, pid in pids.items()}
        start = time.perf_counter()
        failed = await run(calls)
        wall = time.perf_counter() - start
    per = {n: (cpu_seconds(pid) - before[n]) / calls * 1e6 for n, pid in pids.items()}
    rss = {p.name: rss_mb(p.popen.pid) for p in stack.procs if is_worker(p.name)}
    return BatchRun(calls, concurrency, calls / wall, per, failed, rss)


async def busiest_kind(stack: Stack, tool: str, seconds: float) -> tuple[str, dict[str, float]]:
    """The worker kind with the most CPU per handshake under load, and every process's
    (nats-server, redis-server and this client included)."""
    pids = {p.name: p.popen.pid for p in stack.procs}
    pids[CLIENT] = os.getpid()
    async with bench_client(stack) as hs:
        before: dict[str, float] = {}

        def snapshot() -> None:  # after the warm-up: only the measured calls count
            before.update({n: cpu_seconds(pid) for n, pid in pids.items()})

        r = await measure("cpu", lambda: hs.call(tool, RATE), 64, seconds, snapshot)
    per = {n: (cpu_seconds(pid) - before[n]) / r.n * 1e6 for n, pid in pids.items()}
    workers = [n for n in per if "-" in n and not n.startswith(("target", "audit"))]
    return max(workers, key=per.__getitem__).rsplit("-", 1)[0], per


def bench_home() -> Path:
    """A fresh home whose policy is the demo's plus the bench tool's."""
    home = Path(tempfile.mkdtemp(prefix="handshake-bench-"))
    demo_policy = resources.files("mcp_handshake.services.dev.demo").joinpath("policy.cedar")
    (home / "policy.cedar").write_text(demo_policy.read_text() + benchtools.POLICY)
    return home


def bench_stack(home: Path, spec: StackSpec, env: dict[str, str] | None = None) -> Stack:
    """The stack with the bench's function-target tool loaded by its workers."""
    path = os.pathsep.join(
        [str(HERE), (env or {}).get("PYTHONPATH", os.environ.get("PYTHONPATH", ""))]
    )
    return Stack(
        home,
        spec,
        extra_env={"HANDSHAKE_LOG_LEVEL": "WARNING", **(env or {}), "PYTHONPATH": path},
        config_edit=lambda text: text.replace(
            'modules = ["mcp_handshake.services.dev.demo.tools"]',
            'modules = ["mcp_handshake.services.dev.demo.tools", "benchtools"]',
        ),
    )  # fmt: skip


async def main(args: argparse.Namespace) -> None:
    home = bench_home()
    spec = StackSpec(authorize=args.authorize, execute=args.execute, executor=args.executor)
    stack = bench_stack(home, spec)
    await stack.start(timeout=START_TIMEOUT_S)
    try:
        print(f"machine: {os.cpu_count()} cores; workers: {spec}")
        if args.only == "batch":
            await only_batch(stack, args)
            return
        echo = await bench_echo(args.seconds)
        fn = await bench_handshake(stack, FUNCTION_TOOL, "handshake, function target", args.seconds)
        http = await bench_handshake(stack, HTTP_TOOL, "handshake, HTTP target", args.seconds)
        base = await bench_fastmcp(args.seconds)
        kind, per = await busiest_kind(stack, FUNCTION_TOOL, args.seconds)
        streamed = None  # first: the workers' RSS after it is the goal's, nothing else's
        if args.stream_calls:
            streamed = await bench_stream(stack, args.stream_calls, args.stream_concurrency)
        batch = await bench_batch(stack, args.batch_calls, args.batch_concurrency)
        stack.start_worker(kind, 1)
        await stack.wait_ready({f"handshake-{kind}": 2}, START_TIMEOUT_S)
        scaled = await bench_handshake(
            stack, FUNCTION_TOOL, f"function target, 2 {kind}", args.seconds
        )
    finally:
        stack.stop()
    report(echo, fn, http, base, kind, per, streamed, scaled)
    report_batch(batch)
    figures = goals.Figures(
        stream_rate=batch.rate, single_peak=_peak(fn).rps,
        fastmcp_peak=_peak(base).rps if base else None,
        single_p50_ms=fn[0].p50, fastmcp_p50_ms=base[0].p50 if base else None,
        cpu_per_handshake_us=sum(per.values()),
        client_rss_growth_mb=streamed[1] if streamed else None,
        worker_rss_mb=streamed[2] if streamed else None,
        stream_calls=batch.calls, rss_calls=args.stream_calls,
    )  # fmt: skip
    goals.print_goals(goals.goal_rows(figures))
    budget(batch, fn, base)


async def only_batch(stack: Stack, args: argparse.Namespace) -> None:
    """The batch goals alone: the single-call and FastMCP peaks (c=16 and 64), the stream."""
    levels = (16, 64)
    fn = await bench_handshake(stack, FUNCTION_TOOL, "handshake, function target", args.seconds,
                               levels)  # fmt: skip
    base = await bench_fastmcp(args.seconds, levels)
    batch = await bench_batch(stack, args.batch_calls, args.batch_concurrency)
    print()
    for r in fn + base:
        print(r.row())
    report_batch(batch)
    figures = goals.Figures(stream_rate=batch.rate, single_peak=_peak(fn).rps,
                            fastmcp_peak=_peak(base).rps if base else None,
                            stream_calls=batch.calls)  # fmt: skip
    goals.print_goals(goals.goal_rows(figures))
    budget(batch, fn, base)


def report_batch(batch: BatchRun) -> None:
    failed = f"; {batch.failed} failed" if batch.failed else ""
    print(f"\nstream() of {batch.calls:,} function-target operations, {batch.concurrency} in "
          f"flight, Merkle receipts: {batch.rate:,.0f} ops/s{failed}; CPU per operation, "
          "per process:")  # fmt: skip
    for name, us in sorted(batch.per.items(), key=lambda kv: -kv[1]):
        print(f"  {name:<14} {us:7.0f} us")
    print(f"  {'all':<14} {sum(batch.per.values()):7.0f} us")
    print("worker RSS after it: " + ", ".join(f"{n} {mb:.0f} MB" for n, mb in batch.rss.items()))


def budget(batch: BatchRun, fn: list[Result], base: list[Result]) -> None:
    """What the batch goals ask of the CPU per batched operation."""
    targets = {f"{goals.STREAM_VS_SINGLE:g}x the single-call peak":
               goals.STREAM_VS_SINGLE * _peak(fn).rps}  # fmt: skip
    if base:
        targets[f"{goals.STREAM_VS_FASTMCP:g}x FastMCP's peak"] = (
            goals.STREAM_VS_FASTMCP * _peak(base).rps
        )
    goals.print_budget(f"stream() of {batch.calls:,}", batch.per, targets)


def _peak(rows: list[Result]) -> Result:
    return max(rows, key=lambda r: r.rps)


def report(
    echo: list[Result],
    fn: list[Result],
    http: list[Result],
    base: list[Result],
    kind: str,
    per: dict[str, float],
    streamed: tuple[float, float, dict[str, float]] | None,
    scaled: list[Result],
) -> None:
    print()
    for r in echo + fn + http + base + scaled:
        print(r.row())
    print()
    print("CPU per handshake (function target, c=64), per process:")
    for name, us in sorted(per.items(), key=lambda kv: -kv[1]):
        print(f"  {name:<14} {us:7.0f} us")
    if streamed is not None:
        rate, grown, workers = streamed
        sizes = ", ".join(f"{n} {mb:.0f} MB" for n, mb in workers.items())
        print(f"\nstream() for RSS: {rate:.0f} calls/s; client RSS grew {grown:.1f} MB; "
              f"worker RSS: {sizes}")  # fmt: skip
    rows = []
    if base:
        b1, bpeak = base[0], _peak(base)
        rows += [
            ("function-target p50 at c=1 vs FastMCP p50", f"{fn[0].p50 / b1.p50:.2f}x", "<= 1.0x"),
            ("function-target peak vs FastMCP peak", f"{_peak(fn).rps / bpeak.rps:.2f}x", ">= 3x"),
            ("HTTP-target peak vs FastMCP peak", f"{_peak(http).rps / bpeak.rps:.2f}x", ">= 2.5x"),
        ]
    rows += [
        ("HTTP-target peak vs the echo peak", f"{_peak(http).rps / _peak(echo).rps:.1%}", ">= 4%"),
        (f"function-target peak, 2 vs 1 {kind} processes",
         f"{_peak(scaled).rps / _peak(fn).rps:.2f}x", "2 cores shared by every process"),
    ]  # fmt: skip
    print("\nratios (same run):")
    for what, value, goal in rows:
        print(f"  {what:<48} {value:>7}  (goal {goal})")
    if base:
        why_missed(_peak(base), per)
        if fn[0].p50 > base[0].p50:
            print(f"\np50 at c=1: {fn[0].p50:.3f} ms against FastMCP's {base[0].p50:.3f} ms; "
                  "the handshake's steps in series, each timed inside its worker: "
                  "bench/step_latency.py (make bench runs it last)")  # fmt: skip


def why_missed(fastmcp_peak: Result, per: dict[str, float]) -> None:
    """What the peak goal asks of the CPU budget, from this run's own figures: every
    process shares this machine's cores, so the peak is at most cores / CPU per handshake."""
    cores = os.cpu_count() or 1
    total = sum(per.values())
    need = cores / (3 * fastmcp_peak.rps) * 1e6
    print(f"\nCPU budget (function target, c=64): {total:,.0f} us per handshake across every "
          f"process, the client included, so {cores} cores cap the peak near "
          f"{cores / total * 1e6:,.0f}/s; 3x FastMCP's peak ({3 * fastmcp_peak.rps:,.0f}/s) "
          f"needs at most {need:,.0f} us.")  # fmt: skip
    if total > need:
        top = sorted(per.items(), key=lambda kv: -kv[1])[:3]
        print("  the largest shares: " + ", ".join(f"{n} {us:,.0f} us" for n, us in top)
              + "; where each goes and what would close the gap: docs/performance.md,"
              + ' "Not reached"')  # fmt: skip


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--authorize", type=int, default=1)
    parser.add_argument("--execute", type=int, default=1)
    parser.add_argument("--executor", type=int, default=1)
    parser.add_argument(
        "--stream-calls",
        type=int,
        default=100_000,
        help="calls of the stream() whose RSS growth is measured (0: none)",
    )
    parser.add_argument(
        "--batch-calls",
        type=int,
        default=20_000,
        help="operations of the stream() whose rate is the batch goal's",
    )
    parser.add_argument(
        "--batch-concurrency",
        type=int,
        default=1024,
        help="calls in flight in the timed stream() (batches of at most 128)",
    )
    parser.add_argument(
        "--stream-concurrency",
        type=int,
        default=64,
        help="calls in flight in the stream() whose RSS is measured",
    )
    parser.add_argument(
        "--only",
        choices=["all", "batch"],
        default="all",
        help="batch: only the stream and the peaks it is compared with",
    )
    args = parser.parse_args()
    try:
        import uvloop

        uvloop.run(main(args))
    except ImportError:
        asyncio.run(main(args))
