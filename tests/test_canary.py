"""Canaries: recognizable secrets in params, tokens, sessions and the target API key
appear nowhere: not in the audit log, the audit stream, worker logs or error replies."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

import nats
import pytest
from nats.js.api import DeliverPolicy

from mcp_handshake.services.dev.devstack import Stack
from mcp_handshake.services.runtime.audit import STREAM
from tests.conftest import connected

PARAM_CANARY = "CANARYPARAM7f3a9"
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


async def _stream_dump(nc: nats.NATS) -> bytes:
    got: list[bytes] = []

    async def cb(msg: nats.aio.msg.Msg) -> None:
        got.append(msg.data + json.dumps(dict(msg.headers or {})).encode())

    sub = await nc.jetstream().subscribe(
        "handshake.audit.>",
        stream=STREAM,
        cb=cb,
        ordered_consumer=True,
        deliver_policy=DeliverPolicy.ALL,
    )
    await asyncio.sleep(1.0)
    await sub.unsubscribe()
    return b"\n".join(got)


@pytest.fixture
def chatty_stack(stack_factory: Callable[..., Stack]) -> Stack:
    """JSON log lines at DEBUG: the most a worker ever writes."""
    return stack_factory(HANDSHAKE_LOG_LEVEL="DEBUG", HANDSHAKE_LOG_FORMAT="json")


async def test_no_canary_leaks(chatty_stack: Stack) -> None:
    own_stack = chatty_stack
    replies: list[str] = []
    secrets: dict[str, str] = {}
    async with connected(own_stack) as raw:
        alice = raw.session("alice", "billing")
        secrets["session"] = alice
        secrets["api key"] = (own_stack.home / "secrets" / "payments_api_key").read_text().strip()
        invoice = {
            "customer_id": "cus_8f3k2m9q",
            "amount": 42,
            "currency": "EUR",
            "memo": f"memo {PARAM_CANARY}",
        }
        g = (await raw.authorize(alice, "payments.create_invoice", invoice)).body
        secrets["token"] = g["token"]
        r = await raw.execute(
            alice, g, "payments.create_invoice", invoice, extra_headers={"traceparent": TRACEPARENT}
        )
        assert r.error is None, r.body
        replay = await raw.execute(alice, g, "payments.create_invoice", invoice)
        replies.append(json.dumps(replay.body))
        # refusals that carry the canary in what they refuse
        bad = [
            {**invoice, "currency": PARAM_CANARY},
            {**invoice, "memo": PARAM_CANARY * 20},
            {**invoice, "customer_id": PARAM_CANARY},
        ]
        for params in bad:
            replies.append(
                json.dumps((await raw.authorize(alice, "payments.create_invoice", params)).body)
            )
        carol = raw.session("carol", "support")
        for cid in (f"../{PARAM_CANARY}", f"cus_{PARAM_CANARY}"):
            reply = await raw.authorize(carol, "customers.get_customer", {"customer_id": cid})
            replies.append(json.dumps(reply.body))
            if reply.error is None:
                done = await raw.execute(
                    carol, reply.body, "customers.get_customer", {"customer_id": cid}
                )
                replies.append(json.dumps(done.body))
        g2 = (await raw.authorize(alice, "payments.create_invoice", invoice)).body
        secrets["unused token"] = g2["token"]
        wrong = await raw.execute(
            alice, {**g2, "token": g["token"]}, "payments.create_invoice", invoice
        )
        replies.append(json.dumps(wrong.body))
        replies.append(
            json.dumps(
                (
                    await raw.request(
                        raw.s.authorize,
                        {"tool": "payments.create_invoice", "params": invoice},
                        headers={"Authorization": f"Bearer {alice}x"},
                    )
                ).body
            )
        )
        await asyncio.sleep(1.5)  # let the audit worker write
        async with connected(own_stack, "operator") as operator:
            stream = await _stream_dump(operator.nc)
    own_stack.stop()  # flush logs and the final checkpoint
    audit_log = (own_stack.home / "audit" / "audit.log").read_bytes()
    assert b"execute.succeeded" in audit_log and stream
    worker_logs = b"".join(
        p.read_bytes()
        for p in (own_stack.home / "logs").glob("*.log")
        if p.name not in {"nats-server.log", "redis-server.log"}
    )
    places = {
        "audit log": audit_log,
        "audit stream": stream,
        "worker logs": worker_logs,
        "error replies": "\n".join(replies).encode(),
    }
    canaries = {"param": PARAM_CANARY, **secrets}
    for where, data in places.items():
        for what, canary in canaries.items():
            assert canary.encode() not in data, f"{what} found in {where}"
    # worker logs are JSON lines; the executor's line for the call carries txn and trace id
    lines = [json.loads(line) for line in worker_logs.decode().splitlines() if line.startswith("{")]
    assert lines and all("level" in x and "msg" in x for x in lines)
    executed = [
        x for x in lines if x.get("txn") == g["transaction_id"] and x["msg"].startswith("executed")
    ]
    assert executed and executed[0]["trace_id"] == TRACEPARENT.split("-")[1]
