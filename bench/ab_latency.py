"""Two (or more) versions of the stack side by side, measured in turns in one session.

On a shared machine a figure from one minute is not comparable with a figure
from the next. Here every arm (a version of the code, or a setting) runs its
own stack at the same time, and the arms take turns: each round runs a block
of handshakes on every arm, in an order that rotates from round to round
(A B C, B C A, C A B, ...), so each arm meets the machine's good and bad
minutes alike (``--calls 1``: the arms alternate call by call). Reported
per arm: p50, mean and p99 wall time over all its calls, the median of its
blocks' p50s, the difference to the first arm's block in the same round
(median, with a 95% interval), CPU per handshake of each of its processes
(utime+stime from ``/proc`` over the whole run, divided by the arm's calls;
this client's thread CPU around the arm's own blocks), and with ``--steps``
each step's mean wall time inside the workers (``bench/steptimer``).

    git archive HEAD~1 services shared client | tar -x -C /tmp/before
    python bench/ab_latency.py --arm before=/tmp/before --arm after --fastmcp \\
        --rounds 10 --calls 200 --concurrency 1

``--arm NAME[=TREE][,KEY=VALUE...]``: ``TREE`` is an unpacked tree whose
``services``, ``shared`` and ``client`` go first on the workers' ``PYTHONPATH``
(the current tree when omitted); ``KEY=VALUE`` pairs are extra environment for
the arm's workers (e.g. ``HANDSHAKE_EXECUTE_INTENT=concurrent``). ``--fastmcp``
adds the unauthenticated FastMCP tool call as one more arm, for the ratio. The
client is this process, the same for every arm.
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import uvloop

from mcp_handshake.services.dev.devstack import Stack, StackSpec

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import handshake  # noqa: E402 - the bench beside this file: its stack and tool
import step_latency  # noqa: E402

RATE = handshake.RATE


@dataclass
class Arm:
    name: str
    tree: str = ""
    env: dict[str, str] = field(default_factory=dict)
    op: Callable[[], Awaitable[object]] | None = None
    pids: dict[str, int] = field(default_factory=dict)
    steps: Path | None = None
    latencies: list[float] = field(default_factory=list)
    #: A handshake's two client round trips (authorize, execute), wall seconds each.
    phases: dict[str, list[float]] = field(default_factory=dict)
    block_p50: list[float] = field(default_factory=list)
    cpu: dict[str, float] = field(default_factory=dict)
    done: int = 0


def parse_arm(text: str) -> Arm:
    head, *pairs = text.split(",")
    name, _, tree = head.partition("=")
    env = dict(p.split("=", 1) for p in pairs)
    return Arm(name, tree, env)


def arm_env(arm: Arm, steps: bool) -> dict[str, str]:
    path = [str(HERE / "steptimer")] if steps else []
    if arm.tree:
        path += [str(Path(arm.tree) / part) for part in ("services", "shared", "client")]
    env = dict(arm.env)
    if path:
        env["PYTHONPATH"] = os.pathsep.join([*path, os.environ.get("PYTHONPATH", "")])
    if steps:
        arm.steps = Path(tempfile.mkdtemp(prefix=f"ab-steps-{arm.name}-"))
        env["HANDSHAKE_BENCH_STEPS"] = str(arm.steps)
    return env


async def block(arm: Arm, calls: int, concurrency: int) -> None:
    """``calls`` handshakes on ``arm`` by ``concurrency`` loops (this client's CPU
    around them is the arm's; its stack's processes are its own for the whole run)."""
    assert arm.op is not None
    op = arm.op
    lat: list[float] = []
    left = calls
    cpu = time.thread_time()

    async def loop() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            t0 = time.perf_counter()
            await op()
            lat.append(time.perf_counter() - t0)

    await asyncio.gather(*(loop() for _ in range(concurrency)))
    arm.cpu["client"] = arm.cpu.get("client", 0.0) + time.thread_time() - cpu
    arm.done += len(lat)
    arm.latencies += lat
    arm.block_p50.append(statistics.median(lat))


def cpu_now(arms: list[Arm]) -> dict[str, dict[str, float]]:
    return {a.name: {n: handshake.cpu_seconds(p) for n, p in a.pids.items()} for a in arms}


def phased(arm: Arm, hs: Any, tool: str) -> Callable[[], Awaitable[object]]:
    """A handshake as ``call`` makes it (public tier), each client round trip timed."""
    auth, execute = arm.phases.setdefault("authorize", []), arm.phases.setdefault("execute", [])

    async def op() -> object:
        t0 = time.perf_counter()
        grant = await hs.authorize(tool, RATE)
        t1 = time.perf_counter()
        out = await hs.execute(grant, tool, RATE)
        auth.append(t1 - t0)
        execute.append(time.perf_counter() - t1)
        return out

    return op


async def fastmcp_arm(stack_exit: list[Callable[[], Awaitable[None]]]) -> Arm:
    client, proc = await handshake.start_fastmcp()
    await client.__aenter__()

    async def close() -> None:
        await client.__aexit__(None, None, None)
        proc.terminate()
        await proc.wait()

    stack_exit.append(close)
    arm = Arm("fastmcp", pids={"server": proc.pid})
    arm.op = lambda: client.call_tool("get_exchange_rate", RATE)
    return arm


async def main(args: argparse.Namespace) -> None:
    arms = [parse_arm(a) for a in args.arm]
    stacks: list[Stack] = []
    closers: list[Callable[[], Awaitable[None]]] = []
    try:
        for arm in arms:
            stack = handshake.bench_stack(handshake.bench_home(), StackSpec(),
                                          env=arm_env(arm, args.steps))  # fmt: skip
            stacks.append(stack)
            await stack.start()
            hs = handshake.bench_client(stack)
            await hs.__aenter__()
            closers.append(lambda hs=hs: hs.__aexit__(None, None, None))
            arm.op = phased(arm, hs, args.tool)
            arm.pids = {p.name: p.popen.pid for p in stack.procs}
        if args.fastmcp:
            arms.append(await fastmcp_arm(closers))
        for arm in arms:  # warm up: pools at their working size
            await handshake.warm_up(arm.op, args.concurrency)  # type: ignore[arg-type]
        before = {a.name: await step_latency.settle(a.steps) for a in arms if a.steps}
        cpu = cpu_now(arms)
        for r in range(args.rounds):
            for i in range(len(arms)):
                await block(arms[(r + i) % len(arms)], args.calls, args.concurrency)
        for name, used in cpu_now(arms).items():
            arm = next(a for a in arms if a.name == name)
            arm.cpu.update({n: s - cpu[name][n] for n, s in used.items()})
        after = {a.name: await step_latency.settle(a.steps) for a in arms if a.steps}
    finally:
        for close in reversed(closers):
            await close()
        for stack in stacks:
            stack.stop()
    report(arms, args, {n: step_latency.diff(after[n], before[n]) for n in after})


def report(arms: list[Arm], args: argparse.Namespace, steps: dict[str, Any]) -> None:
    print(f"{args.rounds} rounds x {args.calls} calls per arm at concurrency "
          f"{args.concurrency}, tool {args.tool}, arms in rotating order")  # fmt: skip
    for arm in arms:
        q = statistics.quantiles(arm.latencies, n=100)
        blocks = ", ".join(f"{p * 1e3:.2f}" for p in arm.block_p50[:40])
        print(f"\n{arm.name}: p50 {q[49] * 1e3:.3f} ms  mean "
              f"{statistics.mean(arm.latencies) * 1e3:.3f} ms  p99 {q[98] * 1e3:.3f} ms  "
              f"median of block p50s {statistics.median(arm.block_p50) * 1e3:.3f} ms")  # fmt: skip
        print(f"  block p50s (ms, the first 40): {blocks}")
        for phase, values in arm.phases.items():
            print(f"  client {phase} round trip: mean {statistics.mean(values) * 1e6:.0f} us, "
                  f"p50 {statistics.median(values) * 1e6:.0f} us")  # fmt: skip
        per = {n: s / arm.done * 1e6 for n, s in arm.cpu.items()}
        print(
            f"  CPU per call: {sum(per.values()):,.0f} us in all; "
            + ", ".join(f"{n} {us:.0f}" for n, us in sorted(per.items(), key=lambda kv: -kv[1]))
        )
        for kind, table in sorted(steps.get(arm.name, {}).items()):
            ranked = sorted(table.items(), key=lambda kv: -kv[1])
            print(f"  {kind}: " + ", ".join(f"{s} {us:.0f}" for s, us in ranked))
    first = arms[0]
    for arm in arms[1:]:
        pairs = sorted(b - a for a, b in zip(first.block_p50, arm.block_p50, strict=True))
        n = len(pairs)
        half = 0.98 * n**0.5  # ranks of a 95% interval for the median (normal approximation)
        low, high = pairs[max(0, int(n / 2 - half))], pairs[min(n - 1, int(n / 2 + half))]
        print(f"\n{arm.name} - {first.name}, block p50s of the same round: median "
              f"{statistics.median(pairs) * 1e6:+.0f} us (95% interval {low * 1e6:+.0f} to "
              f"{high * 1e6:+.0f}), mean {statistics.mean(pairs) * 1e6:+.0f} us; lower in "
              f"{sum(d < 0 for d in pairs)} of {n} rounds")  # fmt: skip
    base = next((a for a in arms if a.name == "fastmcp"), None)
    if base is not None:
        b = statistics.median(base.latencies)
        print(
            "\np50 vs FastMCP's (same rounds): "
            + ", ".join(
                f"{a.name} {statistics.median(a.latencies) / b:.2f}x" for a in arms if a is not base
            )
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--arm", action="append", required=True)
    parser.add_argument("--fastmcp", action="store_true")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--tool", default=handshake.FUNCTION_TOOL)
    parser.add_argument("--steps", action="store_true", help="time each step in the workers")
    uvloop.run(main(parser.parse_args()))
