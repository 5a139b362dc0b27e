"""CPU time per handshake, per process, under load: where the time goes.

Starts the whole stack, drives ``HandshakeClient.call`` at the given
concurrency for a while, and divides each process's CPU time (utime + stime
from ``/proc``, Linux only) by the handshakes done.

    python bench/cpu_breakdown.py --seconds 6 --concurrency 64

``--tool`` picks the operation: the HTTP-target one by default,
``bench.exchange_rate`` for the function target (as ``handshake.py`` runs it);
``--profile execute-0`` also records that process with py-spy for the measured
window (``--profile-out``: a flame graph SVG, or ``.txt`` for collapsed stacks).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import uvloop

from mcp_handshake.services.dev.devstack import Stack, StackSpec

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


async def main(args: argparse.Namespace) -> None:
    seconds, concurrency, tool = args.seconds, args.concurrency, args.tool
    if tool == handshake.FUNCTION_TOOL:  # the bench's in-process tool, as handshake.py runs it
        stack = handshake.bench_stack(handshake.bench_home(), StackSpec())
    else:
        stack = Stack(Path(tempfile.mkdtemp(prefix="handshake-cpu-")), StackSpec(),
                      extra_env={"HANDSHAKE_LOG_LEVEL": "WARNING"})  # fmt: skip
    await stack.start()
    try:
        async with handshake.bench_client(stack) as hs:
            await handshake.warm_up(lambda: hs.call(tool, RATE), concurrency)
            pids = {p.name: p.popen.pid for p in stack.procs}
            pids["bench client"] = os.getpid()
            spy = None
            if args.profile:
                spy = start_profile(pids[args.profile], seconds, args.profile_out)
            before = {name: handshake.cpu_seconds(pid) for name, pid in pids.items()}
            start = time.monotonic()
            end = start + seconds
            done = 0

            async def loop() -> None:
                nonlocal done
                while time.monotonic() < end:
                    await hs.call(tool, RATE)
                    done += 1

            await asyncio.gather(*(loop() for _ in range(concurrency)))
            wall = time.monotonic() - start
            print(f"{done / wall:.0f} handshakes/s over {wall:.1f} s at concurrency {concurrency}")
            for name, pid in pids.items():
                used = handshake.cpu_seconds(pid) - before[name]
                print(f"  {name:<14} {used / wall:6.1%} cpu  {used / done * 1e6:7.0f} us/handshake")
            if spy is not None:
                spy.wait()
                print(f"profile of {args.profile}: {args.profile_out}")
    finally:
        stack.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--tool", default="payments.get_exchange_rate")
    parser.add_argument("--profile", default="", help="process to record, e.g. execute-0")
    parser.add_argument("--profile-out", default="profile.svg")
    args = parser.parse_args()
    uvloop.run(main(args))
