"""Where a handshake's wall time goes at concurrency 1, step by step.

Starts the bench's stack (function target) with ``bench/steptimer`` on the
workers' path, which times each step inside the workers (the session check
and params binding, the token issue and consume in Redis, the acknowledged
execute intent, dispatch signing, the executor's signature check and dispatch
marker, receipt signing), and times the client's own phases around them. Then
prints each step's mean wall time, next to the nats-py echo round trip that
every hop costs at least.

    python bench/step_latency.py --calls 2000

Means over ``--calls`` sequential handshakes after a warm-up (``--pause-ms``:
an idle pause after each, so the audit worker and nats-server have finished
with the previous handshake's events before the next starts); the steps of one
process nest (``handle_execute`` holds ``send_dispatch``, which holds the
executor's whole ``handle_dispatch`` plus two bus hops).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import uvloop

from mcp_handshake.services.dev.devstack import StackSpec

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import handshake  # noqa: E402 - the bench beside this file: its stack and echo run

RATE = handshake.RATE
TOOL = handshake.FUNCTION_TOOL


def read_steps(folder: Path) -> dict[str, dict[str, list[int]]]:
    """Each worker kind's table (count, total ns per step), summed over its processes."""
    out: dict[str, dict[str, list[int]]] = {}
    for file in folder.glob("*.json"):
        data = json.loads(file.read_text())
        kind = data["argv"][data["argv"].index("worker") + 1]
        table = out.setdefault(kind, {})
        for step, (n, ns) in data["steps"].items():
            row = table.setdefault(step, [0, 0])
            row[0] += n
            row[1] += ns
    return out


def diff(after: dict[str, Any], before: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Mean microseconds per call of each step between two readings."""
    means: dict[str, dict[str, float]] = {}
    for kind, table in after.items():
        for step, (n, ns) in table.items():
            n0, ns0 = before.get(kind, {}).get(step, [0, 0])
            if n > n0:
                means.setdefault(kind, {})[step] = (ns - ns0) / (n - n0) / 1e3
    return means


async def settle(folder: Path) -> dict[str, Any]:
    await asyncio.sleep(1.2)  # every worker has written its table since the last call
    return read_steps(folder)


async def main(args: argparse.Namespace) -> None:
    folder = Path(tempfile.mkdtemp(prefix="handshake-steps-"))
    path = os.pathsep.join([str(HERE / "steptimer"), os.environ.get("PYTHONPATH", "")])
    stack = handshake.bench_stack(
        handshake.bench_home(), StackSpec(),
        env={"HANDSHAKE_BENCH_STEPS": str(folder), "PYTHONPATH": path},
    )  # fmt: skip
    await stack.start()
    try:
        async with handshake.bench_client(stack) as hs:
            for _ in range(300):  # warm up
                await hs.call(TOOL, RATE)
            before = await settle(folder)
            phases: dict[str, list[float]] = {"authorize": [], "execute": [], "call": []}
            for _ in range(args.calls):
                t0 = time.perf_counter()
                grant = await hs.authorize(TOOL, RATE)
                t1 = time.perf_counter()
                await hs.execute(grant, TOOL, RATE)
                t2 = time.perf_counter()
                phases["authorize"].append(t1 - t0)
                phases["execute"].append(t2 - t1)
                phases["call"].append(t2 - t0)
                if args.pause_ms:  # let the previous handshake's background work finish
                    await asyncio.sleep(args.pause_ms / 1000)
            after = await settle(folder)
    finally:
        stack.stop()
    echo = (await handshake.bench_echo(2.0, levels=(1,)))[0]
    report(phases, diff(after, before), echo.p50 * 1e3)


def report(phases: dict[str, list[float]], steps: dict[str, dict[str, float]], echo: float) -> None:
    print(f"concurrency 1, {len(phases['call'])} handshakes (function target), mean wall time:")
    for name, values in phases.items():
        print(f"  client {name:<30} {statistics.mean(values) * 1e6:8.0f} us"
              f"  (p50 {statistics.median(values) * 1e6:.0f})")  # fmt: skip
    for kind in ("authorize", "execute", "executor"):
        print(f"  {kind} worker:")
        for step, us in sorted(steps.get(kind, {}).items(), key=lambda kv: -kv[1]):
            print(f"    {step:<34} {us:8.0f} us")
    print(f"  nats-py echo round trip (p50, a plain server): {echo:.0f} us")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--pause-ms", type=float, default=0.0,
                        help="idle time after each handshake (its events settle)")  # fmt: skip
    uvloop.run(main(parser.parse_args()))
