"""CPU time per handshake, per process, under load: where the time goes.

Starts the whole stack, drives ``HandshakeClient.call`` at the given
concurrency for a while, and divides each process's CPU time (utime + stime
from ``/proc``, Linux only) by the handshakes done.

    python bench/cpu_breakdown.py --seconds 6 --concurrency 64

``--tool`` picks the operation: the HTTP-target one by default,
``bench.exchange_rate`` for the function target (as ``handshake.py`` runs it);
``--profile execute-0,authorize-0`` also records those processes with py-spy for the measured
window (``--profile-out``: a flame graph SVG, or ``.txt`` for collapsed stacks; each
process's name goes before the suffix).

``--stream 20000`` measures the batch path instead: one ``HandshakeClient.stream``
of that many operations (``--concurrency`` calls in flight), CPU per operation
per process over the whole stream; ``--repeat 3`` runs it three times in the same
stack (a figure per window, to see the machine's own spread). ``--receipts`` picks
what the stream's execute batches ask for: ``merkle`` (the client's default: one signed
root per batch), ``single`` (a signed receipt per operation), or ``both``: each window
runs twice, single then merkle, by two clients of the same stack, side by side.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import uvloop

from mcp_handshake.client import HandshakeClient
from mcp_handshake.services.dev.devstack import Stack, StackSpec
from mcp_handshake.shared.batchreceipt import ReceiptMode

sys.path.insert(0, str(Path(__file__).resolve().parent))
import handshake  # the bench beside this file: its stack with the function tool

RATE = {"base": "EUR", "quote": "USD"}


def start_profile(pid: int, seconds: float, out: str) -> subprocess.Popen[bytes]:
    """py-spy sampling ``pid`` for ``seconds`` (non-blocking: the process is not paused)."""
    fmt = ["--format", "raw"] if out.endswith(".txt") else []
    spy = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or "py-spy"
    cmd = [spy, "record", "--nonblocking", "--pid", str(pid), "--duration",
           str(int(seconds)), "--rate", "200", "-o", out, *fmt]  # fmt: skip
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def profile_out(out: str, name: str) -> str:
    """``out`` with the process's name before its suffix (``profile.execute-0.svg``)."""
    path = Path(out)
    return str(path.with_name(f"{path.stem}.{name}{path.suffix}"))


async def calls_for(hs: HandshakeClient, tool: str, seconds: float, concurrency: int) -> int:
    """``hs.call`` from ``concurrency`` loops for ``seconds``; the calls done."""
    end = time.monotonic() + seconds
    done = 0

    async def loop() -> None:
        nonlocal done
        while time.monotonic() < end:
            await hs.call(tool, RATE)
            done += 1

    await asyncio.gather(*(loop() for _ in range(concurrency)))
    return done


async def stream_of(hs: HandshakeClient, tool: str, calls: int, concurrency: int) -> int:
    """One ``hs.stream`` of ``calls`` operations; the ones that succeeded."""
    done = 0
    async for _, outcome in hs.stream(((tool, RATE) for _ in range(calls)),
                                      concurrency=concurrency):  # fmt: skip
        done += hasattr(outcome, "receipt")
    if done != calls:
        print(f"({calls - done} of {calls} operations failed)")
    return done


async def window(
    pids: dict[str, int], work: Callable[[], Awaitable[int]], label: str, args: argparse.Namespace
) -> None:
    spies = {
        name: start_profile(pids[name], args.seconds, profile_out(args.profile_out, name))
        for name in filter(None, args.profile.split(","))
    }
    before = {name: handshake.cpu_seconds(pid) for name, pid in pids.items()}
    start = time.monotonic()
    done = await work()
    wall = time.monotonic() - start
    total = 0.0
    print(f"{done / wall:.0f} {label}/s over {wall:.1f} s at concurrency {args.concurrency}")
    for name, pid in pids.items():
        used = handshake.cpu_seconds(pid) - before[name]
        total += used
        print(f"  {name:<14} {used / wall:6.1%} cpu  {used / done * 1e6:7.0f} us/op")
    print(f"  {'all':<14} {total / wall:6.1%} cpu  {total / done * 1e6:7.0f} us/op")
    for name, spy in spies.items():
        spy.wait()
        print(f"profile of {name}: {profile_out(args.profile_out, name)}")


async def streams(stack: Stack, pids: dict[str, int], args: argparse.Namespace) -> None:
    """The stream windows, each receipt mode asked for by a client of its own."""
    modes: list[ReceiptMode] = ["single", "merkle"] if args.receipts == "both" else [args.receipts]
    async with contextlib.AsyncExitStack() as clients:
        hss = {
            m: await clients.enter_async_context(handshake.bench_client(stack, m)) for m in modes
        }
        for hs in hss.values():  # warm-up
            await stream_of(hs, args.tool, min(args.stream, 2000), args.concurrency)
        for _ in range(args.repeat):
            for mode, hs in hss.items():
                await window(pids, functools.partial(stream_of, hs, args.tool, args.stream,
                                                     args.concurrency),
                             f"operations (stream, {mode} receipts)", args)  # fmt: skip


async def main(args: argparse.Namespace) -> None:
    concurrency, tool = args.concurrency, args.tool
    if tool == handshake.FUNCTION_TOOL:  # the bench's in-process tool, as handshake.py runs it
        stack = handshake.bench_stack(handshake.bench_home(), StackSpec())
    else:
        stack = Stack(Path(tempfile.mkdtemp(prefix="handshake-cpu-")), StackSpec(),
                      extra_env={"HANDSHAKE_LOG_LEVEL": "WARNING"})  # fmt: skip
    await stack.start(timeout=handshake.START_TIMEOUT_S)
    try:
        pids = {p.name: p.popen.pid for p in stack.procs}
        pids["client"] = os.getpid()
        if args.stream:
            await streams(stack, pids, args)
            return
        async with handshake.bench_client(stack) as hs:
            await handshake.warm_up(lambda: hs.call(tool, RATE), concurrency)
            for _ in range(args.repeat):
                await window(pids, lambda: calls_for(hs, tool, args.seconds, concurrency),
                             "handshakes", args)  # fmt: skip
    finally:
        stack.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--tool", default="payments.get_exchange_rate")
    parser.add_argument("--stream", type=int, default=0, help="operations of one stream()")
    parser.add_argument("--repeat", type=int, default=1, help="measured windows, one by one")
    parser.add_argument("--receipts", choices=["merkle", "single", "both"], default="merkle",
                        help="what the stream's execute batches ask for")  # fmt: skip
    parser.add_argument("--profile", default="", help="processes to record, e.g. execute-0,client")
    parser.add_argument("--profile-out", default="profile.svg")
    args = parser.parse_args()
    uvloop.run(main(args))
