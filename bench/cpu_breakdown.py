"""CPU time per handshake, per process, under load: where the time goes.

Starts the whole stack, drives ``HandshakeClient.call`` at the given
concurrency for a while, and divides each process's CPU time (utime + stime
from ``/proc``, Linux only) by the handshakes done.

    python bench/cpu_breakdown.py --seconds 6 --concurrency 64
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from pathlib import Path

from mcp_handshake.client import HandshakeClient
from mcp_handshake.services.dev.devhome import mint_session
from mcp_handshake.services.dev.devstack import Stack, StackSpec

RATE = {"base": "EUR", "quote": "USD"}


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def main(seconds: float, concurrency: int) -> None:
    stack = Stack(Path(tempfile.mkdtemp(prefix="handshake-cpu-")), StackSpec(),
                  extra_env={"HANDSHAKE_LOG_LEVEL": "WARNING"})  # fmt: skip
    await stack.start()
    try:
        token = mint_session(stack.home, "alice", roles=["billing"])
        async with HandshakeClient(
            stack.nats_url or "", session=token, connect_options=stack.agent_options()
        ) as hs:
            for _ in range(300):  # warm up
                await hs.call("payments.get_exchange_rate", RATE)
            pids = {p.name: p.popen.pid for p in stack.procs}
            pids["bench client"] = os.getpid()
            before = {name: cpu_seconds(pid) for name, pid in pids.items()}
            start = time.monotonic()
            end = start + seconds
            done = 0

            async def loop() -> None:
                nonlocal done
                while time.monotonic() < end:
                    await hs.call("payments.get_exchange_rate", RATE)
                    done += 1

            await asyncio.gather(*(loop() for _ in range(concurrency)))
            wall = time.monotonic() - start
            print(f"{done / wall:.0f} handshakes/s over {wall:.1f} s at concurrency {concurrency}")
            for name, pid in pids.items():
                used = cpu_seconds(pid) - before[name]
                print(f"  {name:<14} {used / wall:6.1%} cpu  {used / done * 1e6:7.0f} us/handshake")
    finally:
        stack.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--concurrency", type=int, default=64)
    args = parser.parse_args()
    asyncio.run(main(args.seconds, args.concurrency))
