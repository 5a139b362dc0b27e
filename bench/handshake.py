"""Handshake throughput and latency, side by side with the limits, in one run.

Starts its own nats-server and redis-server on free ports and the whole stack,
then measures, on this machine:

* raw nats-py request-reply echo (the transport's limit), concurrency 1 and 64;
* the full handshake through ``HandshakeClient.call`` (JWT, authorize, atomic
  consume, executor hop, target HTTP call, signed and verified receipt),
  concurrency 1 and 64;
* a plain, unauthenticated FastMCP HTTP tool call (when ``fastmcp`` is installed).

Prints throughput, p50 and p99 and the ratios. Run: ``make bench``.
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
from pathlib import Path

import nats

from mcp_handshake.client import HandshakeClient
from mcp_handshake.services.dev.devhome import mint_session
from mcp_handshake.services.dev.devstack import Stack, StackSpec
from mcp_handshake.services.dev.procs import free_port

HERE = Path(__file__).resolve().parent
RATE = {"base": "EUR", "quote": "USD"}


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


async def measure(
    name: str, op: Callable[[], Awaitable[object]], concurrency: int, seconds: float
) -> Result:
    for _ in range(min(200, concurrency * 10)):  # warm up
        await op()
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


async def bench_echo(url: str, seconds: float) -> list[Result]:
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

        out = [await measure("nats-py echo (limit)", op, c, seconds) for c in (1, 64)]
        await nc.close()
        return out
    finally:
        proc.terminate()
        await proc.wait()


async def bench_handshake(stack: Stack, seconds: float) -> list[Result]:
    token = mint_session(stack.home, "alice", roles=["billing"])
    out = []
    async with HandshakeClient(
        stack.nats_url or "", session=token, connect_options=stack.agent_options()
    ) as hs:

        async def op() -> object:
            return await hs.call("payments.get_exchange_rate", RATE)

        for c in (1, 64):
            out.append(await measure("full handshake (call)", op, c, seconds))
    return out


async def bench_fastmcp(seconds: float) -> list[Result]:
    try:
        from fastmcp import Client
    except ImportError:
        print("(fastmcp not installed: pip install -e '.[bench]' for the baseline)")
        return []
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(HERE / "fastmcp_server.py"),
        str(port),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        client = Client(f"http://127.0.0.1:{port}/mcp")
        for _ in range(100):
            try:
                async with client:
                    break
            except Exception:
                await asyncio.sleep(0.1)
        async with client:

            async def op() -> object:
                return await client.call_tool("get_exchange_rate", RATE)

            return [await measure("FastMCP HTTP tool call (baseline)", op, 1, seconds)]
    finally:
        proc.terminate()
        await proc.wait()


async def main(args: argparse.Namespace) -> None:
    home = Path(tempfile.mkdtemp(prefix="handshake-bench-"))
    spec = StackSpec(authorize=args.authorize, execute=args.execute, executor=args.executor)
    stack = Stack(home, spec, extra_env={"HANDSHAKE_LOG_LEVEL": "WARNING"})
    await stack.start()
    try:
        print(f"machine: {os.cpu_count()} cores; workers: {spec}")
        echo = await bench_echo(stack.nats_url or "", args.seconds)
        hs = await bench_handshake(stack, args.seconds)
        base = await bench_fastmcp(args.seconds)
    finally:
        stack.stop()
    print()
    for r in echo + hs + base:
        print(r.row())
    print()
    for e, h in zip(echo, hs, strict=True):
        print(
            f"c={e.concurrency:<3} handshake/echo throughput {h.rps / e.rps:6.1%}   "
            f"p50 {h.p50 / e.p50:5.1f}x echo"
        )
    if base:
        b = base[0]
        print(
            f"c=1   handshake p50 {hs[0].p50:.3f} ms vs FastMCP {b.p50:.3f} ms: "
            f"{b.p50 / hs[0].p50:.2f}x {'faster' if hs[0].p50 < b.p50 else 'slower'}"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--authorize", type=int, default=1)
    parser.add_argument("--execute", type=int, default=1)
    parser.add_argument("--executor", type=int, default=1)
    args = parser.parse_args()
    try:
        import uvloop

        uvloop.run(main(args))
    except ImportError:
        asyncio.run(main(args))
