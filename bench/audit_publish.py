"""CPU per audit event of each way to publish it, on a JetStream server of its own.

Process CPU time (``time.process_time``) of this process, and nats-server's from
``/proc``, divided by events: robust to other load on the machine, unlike
wall-clock throughput. Modes:

* ``awaited``: ``js.publish`` and wait for each ack before the next;
* ``outbox``: the audit outbox (bounded window of outstanding acks) over
  ``js.publish``;
* ``outbox+acks``: the outbox over :class:`AckPublisher` (acks matched on one
  wildcard subscription, decoded by msgspec): what the workers use.

Each "handshake" queues two events and publishes one core reply in the same
loop turn, as the execute worker does.

    python bench/audit_publish.py --events 20000
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import nats
import uvloop

from mcp_handshake.services.dev.procs import find_nats_server, free_port, wait_port
from mcp_handshake.services.runtime.audit import ensure_audit_stream
from mcp_handshake.services.runtime.outbox import Outbox
from mcp_handshake.services.runtime.pubacks import AckPublisher

EVENT = b'{"kind":"execute.succeeded","id":"x","at":1.0,"worker":"execute@h:1","outcome":"ok"}'
SUBJECT = "handshake.audit.execute.execute.succeeded"


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def run_mode(nc: nats.NATS, mode: str, events: int, server_pid: int) -> str:
    js = nc.jetstream()
    acks = AckPublisher(nc)
    n = 0

    def headers() -> dict[str, str]:
        nonlocal n
        n += 1
        return {"Nats-Msg-Id": f"{mode}.{n}"}

    async def via_js(item: bytes) -> object:
        return await js.publish(SUBJECT, item, timeout=5.0, headers=headers())

    async def via_acks(item: bytes) -> object:
        return await acks.publish(SUBJECT, item, headers=headers(), timeout=5.0)

    send: Callable[[bytes], Awaitable[object]] = via_acks if mode == "outbox+acks" else via_js
    box: Outbox[bytes] = Outbox(send, limit=10_000)
    for _ in range(200):  # warm up
        await send(EVENT)
    cpu0, srv0, t0 = time.process_time(), cpu_seconds(server_pid), time.perf_counter()
    for i in range(events // 2):
        if mode == "awaited":
            await send(EVENT)
            await send(EVENT)
        else:
            box.put(EVENT)
            box.put(EVENT)
        await nc.publish("bench.reply", b"{}")
        if i % 32 == 31:  # let acks come back, as between requests
            await asyncio.sleep(0)
    assert await box.drain(30.0) == 0
    cpu, srv = time.process_time() - cpu0, cpu_seconds(server_pid) - srv0
    wall = time.perf_counter() - t0
    return (f"{mode:<12} {cpu / events * 1e6:6.1f} us/event (this process)  nats-server "
            f"{srv / events * 1e6:5.1f} us/event  {events / wall:8.0f} events/s")  # fmt: skip


async def main(events: int) -> None:
    port = free_port()
    store = tempfile.mkdtemp(prefix="bench-js-")
    server = await asyncio.create_subprocess_exec(
        find_nats_server(), "-js", "-sd", store, "-a", "127.0.0.1", "-p", str(port),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_port(port, "nats-server")
        nc = await nats.connect(f"nats://127.0.0.1:{port}")
        await ensure_audit_stream(nc.jetstream(), 900)
        for mode in ("awaited", "outbox", "outbox+acks", "awaited", "outbox", "outbox+acks"):
            print(await run_mode(nc, mode, events, server.pid))
        await nc.close()
    finally:
        server.terminate()
        await server.wait()
        shutil.rmtree(store, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=20_000)
    uvloop.run(main(parser.parse_args().events))
