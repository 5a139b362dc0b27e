"""deploy/nats.conf: agents cannot publish to internal subjects or impersonate workers."""

from __future__ import annotations

import asyncio
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import nats
import pytest

from mcp_handshake.services.dev.devstack import _wait_port, find_nats_server, free_port

ROOT = Path(__file__).resolve().parent.parent
ROLES = ["AGENT", "APPROVER", "AUTHORIZE", "EXECUTE", "EXECUTOR", "APPROVAL", "AUDIT"]


@pytest.fixture
def secured_nats(tmp_path: Path) -> Iterator[str]:
    port = free_port()
    conf = (ROOT / "deploy/nats/nats.conf").read_text()
    conf = conf.replace("listen: 0.0.0.0:4222", f"listen: 127.0.0.1:{port}")
    conf = conf.replace("store_dir: /data/jetstream", f"store_dir: {tmp_path / 'js'}")
    (tmp_path / "nats.conf").write_text(conf)
    env = {**os.environ, **{f"NATS_{r}_PASSWORD": f"pw-{r.lower()}" for r in ROLES}}
    proc = subprocess.Popen(
        [find_nats_server(), "-c", str(tmp_path / "nats.conf")],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_port(port, "nats-server")
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait()


async def _connect(addr: str, user: str, errors: list[Exception] | None = None) -> nats.NATS:
    async def on_error(exc: Exception) -> None:
        if errors is not None:
            errors.append(exc)

    return await nats.connect(f"nats://{user}:pw-{user}@{addr}", error_cb=on_error)


async def test_agent_cannot_reach_internal_subjects(secured_nats: str) -> None:
    executor = await _connect(secured_nats, "executor")
    received: list[bytes] = []

    async def cb(msg: nats.aio.msg.Msg) -> None:
        received.append(msg.data)

    await executor.subscribe("handshake.internal.executor.payments", cb=cb)
    await executor.flush()
    errors: list[Exception] = []
    agent = await _connect(secured_nats, "agent", errors)
    await agent.publish("handshake.internal.executor.payments", b'{"txn":"x"}')
    await agent.publish("handshake.audit.execute.intent", b"{}")
    await agent.flush()
    await asyncio.sleep(0.3)
    assert received == []
    assert any("permissions violation" in str(e).lower() for e in errors), errors
    # the execute worker's user may dispatch
    execute = await _connect(secured_nats, "execute")
    await execute.publish("handshake.internal.executor.payments", b"ok")
    await execute.flush()
    await asyncio.sleep(0.3)
    assert received == [b"ok"]
    for nc in (executor, agent, execute):
        await nc.close()


async def test_agent_cannot_serve_public_subjects(secured_nats: str) -> None:
    """An agent cannot subscribe to handshake.v1.execute to steal tokens in flight."""
    errors: list[Exception] = []
    agent = await _connect(secured_nats, "agent", errors)
    await agent.subscribe("handshake.v1.execute")
    await agent.flush()
    await asyncio.sleep(0.3)
    assert any("permissions violation" in str(e).lower() for e in errors), errors
    await agent.close()
