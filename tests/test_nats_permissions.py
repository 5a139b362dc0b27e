"""deploy/nats/nats.conf is the permission model, and nats-server enforces it as shipped."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import nats
import pytest

from mcp_handshake.services.dev.procs import find_nats_server, free_port, wait_port
from mcp_handshake.shared.natsconn import inbox_prefix

ROOT = Path(__file__).resolve().parent.parent
USERS = [
    "authorize", "execute", "approval", "audit", "executor", "gateway", "operator", "console",
    "agent",
]  # fmt: skip


def test_shipped_config_is_the_generated_one() -> None:
    generated = subprocess.run(
        [str(Path(sys.executable).parent / "mcp-handshake"), "nats-config"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert (ROOT / "deploy/nats/nats.conf").read_text() == generated, (
        "regenerate: mcp-handshake nats-config > deploy/nats/nats.conf"
    )


@pytest.fixture
def secured_nats(tmp_path: Path) -> Iterator[str]:
    port = free_port()
    conf = (ROOT / "deploy/nats/nats.conf").read_text()
    conf = conf.replace("listen: 0.0.0.0:4222", f"listen: 127.0.0.1:{port}")
    conf = conf.replace('store_dir: "/data/jetstream"', f'store_dir: "{tmp_path / "js"}"')
    (tmp_path / "nats.conf").write_text(conf)
    env = {**os.environ, **{f"NATS_{u.upper()}_PASSWORD": f"pw-{u}" for u in USERS}}
    proc = subprocess.Popen(
        [find_nats_server(), "-c", str(tmp_path / "nats.conf")],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_port(port, "nats-server")
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait()


async def _connect(addr: str, user: str, errors: list[Exception] | None = None) -> nats.NATS:
    async def on_error(exc: Exception) -> None:
        if errors is not None:
            errors.append(exc)

    return await nats.connect(
        f"nats://{addr}",
        user=user,
        password=f"pw-{user}",
        inbox_prefix=inbox_prefix(user),
        error_cb=on_error,
    )


def _violations(errors: list[Exception]) -> int:
    return sum("permissions violation" in str(e).lower() for e in errors)


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
    await agent.publish("handshake.audit.execute.execute.intent", b"{}")
    await agent.flush()
    await asyncio.sleep(0.3)
    assert received == []
    assert _violations(errors) == 2, errors
    # the execute worker's user may dispatch
    execute = await _connect(secured_nats, "execute")
    await execute.publish("handshake.internal.executor.payments", b"ok")
    await execute.flush()
    await asyncio.sleep(0.3)
    assert received == [b"ok"]
    for nc in (executor, agent, execute):
        await nc.close()


async def test_agent_cannot_serve_or_read_others(secured_nats: str) -> None:
    """No queue membership on agent subjects, no inbox but its own."""
    errors: list[Exception] = []
    agent = await _connect(secured_nats, "agent", errors)
    for subject, queue in (
        ("handshake.v1.execute", ""),
        ("handshake.v1.authorize", "authorize"),
        ("_INBOX.>", ""),
        ("_INBOX.execute.>", ""),
        ("handshake.internal.>", ""),
    ):
        await agent.subscribe(subject, queue=queue)
    await agent.flush()
    await asyncio.sleep(0.3)
    assert _violations(errors) == 5, errors
    await agent.close()


async def test_each_worker_kind_publishes_only_its_own_audit_events(secured_nats: str) -> None:
    errors: list[Exception] = []
    authorize = await _connect(secured_nats, "authorize", errors)
    await authorize.publish("handshake.audit.execute.execute.intent", b"{}")
    await authorize.publish("handshake.audit.approval.approval.decided", b"{}")
    await authorize.flush()
    await asyncio.sleep(0.3)
    assert _violations(errors) == 2, errors
    await authorize.close()
