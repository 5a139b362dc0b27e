"""Isolation on the bus, as an attacker with an agent identity of its own would try it.

Every test runs against the dev stack, which runs the permission model deploy/ ships.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import nats
import pytest

from mcp_handshake.services.audit.chain import read_entries
from mcp_handshake.services.dev.devstack import Stack
from mcp_handshake.services.runtime.audit import STREAM
from tests.conftest import Raw, connected

RATE = {"base": "EUR", "quote": "USD"}


class Attacker:
    """An agent identity of its own, recording what it receives and what the bus refuses."""

    def __init__(self, nc: nats.NATS, errors: list[Exception]) -> None:
        self.nc = nc
        self.errors = errors
        self.received: list[nats.aio.msg.Msg] = []

    async def sink(self, msg: nats.aio.msg.Msg) -> None:
        self.received.append(msg)

    def refusals(self) -> int:
        return sum("permissions violation" in str(e).lower() for e in self.errors)


async def _attacker(stack: Stack, name: str) -> Attacker:
    errors: list[Exception] = []

    async def on_error(exc: Exception) -> None:
        errors.append(exc)

    nc = await nats.connect(**stack.add_agent(name), error_cb=on_error)
    return Attacker(nc, errors)


@pytest.fixture
async def mallory(stack: Stack) -> AsyncIterator[Attacker]:
    attacker = await _attacker(stack, "mallory")
    try:
        yield attacker
    finally:
        await attacker.nc.close()


async def _handshake(raw: Raw, session: str) -> None:
    g = await raw.authorize(session, "payments.get_exchange_rate", RATE)
    assert g.error is None, g.body
    r = await raw.execute(session, g.body, "payments.get_exchange_rate", RATE)
    assert r.error is None, r.body


async def test_no_agent_reads_another_agents_replies(raw: Raw, mallory: Attacker) -> None:
    alice = raw.session("alice", "billing")
    for subject in ("_INBOX.>", "_INBOX.agent.>", ">", "_INBOX.*.*"):
        await mallory.nc.subscribe(subject, cb=mallory.sink)
    await mallory.nc.flush()
    await asyncio.sleep(0.2)
    for _ in range(5):
        await _handshake(raw, alice)  # grants, tokens and results travel to alice's inbox
    await asyncio.sleep(0.3)
    assert mallory.received == []
    assert mallory.refusals() == 4


async def test_no_agent_joins_a_worker_queue(raw: Raw, mallory: Attacker) -> None:
    """An agent in the authorize queue group would receive session JWTs and params."""
    for subject, queue in (
        ("handshake.v1.authorize", "authorize"),
        ("handshake.v1.execute", "execute"),
        ("handshake.v1.>", "authorize"),
        ("handshake.internal.>", ""),
        ("handshake.internal.executor.payments", "executor-payments"),
        ("handshake.audit.>", ""),
    ):
        await mallory.nc.subscribe(subject, queue=queue, cb=mallory.sink)
    await mallory.nc.flush()
    await asyncio.sleep(0.2)
    alice = raw.session("alice", "billing")
    for _ in range(6):
        await _handshake(raw, alice)  # every one served by a real worker
    assert mallory.received == []
    assert mallory.refusals() == 6


async def test_no_agent_publishes_outside_the_agent_subjects(
    raw: Raw, mallory: Attacker, operator: Raw
) -> None:
    for subject in (
        "handshake.internal.executor.payments",
        "handshake.internal.approval.request",
        "handshake.internal.approval.decided.x",
        "handshake.audit.execute.execute.succeeded",
        "$SRV.PING",
        f"$JS.API.STREAM.DELETE.{STREAM}",
    ):
        await mallory.nc.publish(subject, b"{}")
    await mallory.nc.flush()
    await asyncio.sleep(0.3)
    assert mallory.refusals() == 6
    assert (await operator.nc.jetstream().stream_info(STREAM)).config.name == STREAM


@pytest.mark.parametrize("kind", ["authorize", "execute", "approval", "audit", "executor"])
async def test_no_worker_deletes_or_purges_the_audit_stream(
    stack: Stack, operator: Raw, kind: str
) -> None:
    async with connected(stack, kind) as worker:
        js = worker.nc.jetstream(timeout=1.0)
        for attempt in (js.delete_stream, js.purge_stream):
            with pytest.raises((nats.errors.TimeoutError, nats.js.errors.Error)):
                await attempt(STREAM)
    info = await operator.nc.jetstream().stream_info(STREAM)
    assert info.state.messages > 0


async def test_audit_writer_refuses_an_event_claiming_another_kind(own_stack: Stack) -> None:
    """A compromised execute worker may publish only under handshake.audit.execute; an event
    there that claims to come from authorize is recorded as refused, not as the event."""
    forged = {"kind": "authorize.granted", "id": "forged.authorize.granted", "at": time.time(),
              "worker": "authorize@host:1", "outcome": "ok", "txn": "forged"}  # fmt: skip
    wrong_kind = {**forged, "kind": "authorize.granted", "worker": "execute@host:1",
                  "id": "forged2"}  # fmt: skip
    async with connected(own_stack, "execute") as execute:
        js = execute.nc.jetstream()
        await js.publish("handshake.audit.execute.authorize.granted", json.dumps(forged).encode())
        await js.publish(
            "handshake.audit.execute.authorize.granted", json.dumps(wrong_kind).encode()
        )
    log = own_stack.home / "audit" / "audit.log"
    deadline = time.monotonic() + 10
    refused: list[Any] = []
    while time.monotonic() < deadline and len(refused) < 2:
        events = [e["body"]["event"] for e in read_entries(log) if e["kind"] == "event"]
        refused = [e for e in events if e.get("refused")]
        await asyncio.sleep(0.2)
    assert len(refused) == 2, refused
    assert all(r["subject"] == "handshake.audit.execute.authorize.granted" for r in refused)
    assert not [e for e in events if e.get("txn") == "forged"]


async def test_agents_add_gives_a_working_identity_of_its_own(stack: Stack) -> None:
    """`mcp-handshake agents add` on a running dev stack: the new agent connects at once,
    with its own inbox, and its password file is private."""
    import os
    import subprocess
    import sys

    argv = [sys.executable, "-m", "mcp_handshake.services.dev.cli", "agents", "add", "bot-7"]
    out = await asyncio.to_thread(
        subprocess.run, argv, env=stack.env(), capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert "reloaded" in out.stdout and "_INBOX.bot-7" in out.stdout
    secret = stack.identities.secret_file("bot-7")
    assert os.stat(secret).st_mode & 0o777 == 0o600
    assert secret.read_text().strip() not in out.stdout  # the password is never printed
    options = stack.connect_options("bot-7")
    assert options["inbox_prefix"] == "_INBOX.bot-7"
    nc = await nats.connect(**options)
    try:
        raw = Raw(nc, stack)
        await _handshake(raw, raw.session("alice", "billing"))
    finally:
        await nc.close()
