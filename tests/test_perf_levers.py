"""The performance levers keep their security properties: the execute intent keyed by
the token, events sent without waiting a loop turn, every worker on uvloop."""

from __future__ import annotations

import asyncio
import hashlib
import json
import secrets
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import nats
import pytest
from nats.js.api import DiscardPolicy, StreamConfig
from nats.js.errors import APIError, NoStreamResponseError
from redis.asyncio import Redis

from mcp_handshake.services.audit.chain import read_entries
from mcp_handshake.services.dev.devstack import Stack, StackSpec
from mcp_handshake.services.dev.procs import find_nats_server, free_port, wait_port
from mcp_handshake.services.execute.handler import intent_key
from mcp_handshake.services.runtime.outbox import Outbox
from mcp_handshake.services.runtime.pubacks import AckPublisher
from mcp_handshake.services.runtime.service import discover
from mcp_handshake.services.store import TokenStore
from mcp_handshake.services.store.scripts import Scripts
from tests.conftest import Raw, connected

LIST = {"status": None, "limit": 20}
INVOICE = {"customer_id": "cus_8f3k2m9q", "amount": 12.5, "currency": "EUR", "memo": None}


async def _intents(raw: Raw, txn: str, timeout: float = 15.0) -> list[dict[str, Any]]:
    path = raw.stack.home / "audit" / "audit.log"
    deadline = time.monotonic() + timeout
    while True:
        found = [
            e["body"]["event"]
            for e in read_entries(path)
            if e["kind"] == "event"
            and e["body"]["event"].get("txn") == txn
            and e["body"]["event"]["kind"] == "execute.intent"
        ]
        if found or time.monotonic() > deadline:
            return found
        await asyncio.sleep(0.2)


@pytest.fixture
def concurrent_intent(stack_factory: Callable[..., Stack]) -> Stack:
    """Two execute workers that publish the intent while the token is consumed."""
    spec = StackSpec(authorize=1, execute=2, executor=1, approval=1)
    return stack_factory(spec, HANDSHAKE_EXECUTE_INTENT="concurrent")


async def _forged_first_then_holder(raw: Raw) -> None:
    """Another caller, and the holder's own session with a made-up token, send the
    transaction id first: the intent is keyed by the token, so the holder still runs."""
    alice = raw.session("alice", "billing")
    bob = raw.session("bob", "billing")
    g = (await raw.authorize(alice, "payments.list_invoices", LIST)).body
    before = await raw.target_stats()
    for who in (bob, alice):
        forged = {**g, "token": secrets.token_urlsafe(32)}
        r = await raw.execute(who, forged, "payments.list_invoices", LIST)
        assert r.error == "invalid_transaction", r.body
    ok = await raw.execute(alice, g, "payments.list_invoices", LIST)
    assert ok.error is None, ok.body
    after = await raw.target_stats()
    assert after["calls"]["list_invoices"] == before["calls"].get("list_invoices", 0) + 1
    # The holder's intent is in the log, joined to the transaction, under the token's key.
    th = hashlib.sha256(g["token"].encode()).hexdigest()
    mine = [e for e in await _intents(raw, g["transaction_id"]) if e["outcome"] == "ok"]
    assert f"{intent_key(th)}.execute.intent" in {e["id"] for e in mine}
    text = json.dumps(mine)
    assert g["token"] not in text and th not in text


async def test_a_forged_execute_cannot_take_the_holders_intent(raw: Raw) -> None:
    await _forged_first_then_holder(raw)


async def test_concurrent_intent_keeps_every_property(concurrent_intent: Stack) -> None:
    """With the intent published during the consume: a forged request cannot take the
    holder's intent; a consume lost in a Redis failover is still refused by the intent;
    a token raced by its holder runs at most once, and every refusal is
    ``invalid_transaction``; the restricted tier (approval) still works."""
    async with connected(concurrent_intent) as raw:
        await _forged_first_then_holder(raw)
        alice = raw.session("alice", "billing")
        g = (await raw.authorize(alice, "payments.list_invoices", LIST)).body
        assert (await raw.execute(alice, g, "payments.list_invoices", LIST)).error is None
        redis = Redis.from_url(concurrent_intent.redis_url or "")
        try:  # the consume is lost: the record is put back as granted
            th = (await redis.get(f"handshake:txn:{{{g['transaction_id']}}}")).decode().split()[0]
            await redis.hset(f"handshake:tx:{{{th}}}", "status", "granted")
        finally:
            await redis.aclose()
        before = await raw.target_stats()
        r = await raw.execute(alice, g, "payments.list_invoices", LIST)
        assert r.error == "invalid_transaction", r.body
        assert (await raw.target_stats())["calls"] == before["calls"]
        grants = [(await raw.authorize(alice, "payments.create_invoice", INVOICE)).body
                  for _ in range(40)]  # fmt: skip
        before = await raw.target_stats()
        replies = await asyncio.gather(
            *(raw.execute(alice, g, "payments.create_invoice", INVOICE) for g in grants
              for _ in range(4))
        )  # fmt: skip
        won = [sum(r.error is None for r in replies[i : i + 4]) for i in range(0, 160, 4)]
        assert max(won) == 1 and sum(won) > 0, won
        assert {r.error for r in replies} <= {None, "invalid_transaction"}
        after = await raw.target_stats()
        assert after["side_effects"] - before["side_effects"] == sum(won)
        await _restricted_payment(raw)


async def _restricted_payment(raw: Raw) -> None:
    tess = raw.session("tess-perf", "treasury")
    params = {"to_account": "acct_77aa01", "amount": 250.0, "currency": "EUR"}
    g = (await raw.authorize(tess, "payments.send_payment", params)).body
    pending = await raw.execute(tess, g, "payments.send_payment", params)
    assert pending.error == "approval_pending", pending.body
    decided = await raw.decide(raw.session("victor", "approver"), g["transaction_id"], "approve")
    assert decided.error is None, decided.body
    done = await raw.execute(tess, g, "payments.send_payment", params)
    assert done.error is None, done.body


async def test_raced_tokens_run_once_and_the_trail_says_who(concurrent_intent: Stack) -> None:
    """The intent published with the consume (the default): 30 tokens, each sent 6 times
    at once over two execute workers, each runs exactly once. In the trail every
    transaction has one ``execute.succeeded``, one or two intents (the key's holder, and,
    when the holder lost the consume, the winner's under the second key), never the
    token or its hash. A release never creates a record."""
    async with connected(concurrent_intent) as raw:
        alice = raw.session("alice", "billing")
        grants = [(await raw.authorize(alice, "payments.create_invoice", INVOICE)).body
                  for _ in range(30)]  # fmt: skip
        before = await raw.target_stats()
        replies = await asyncio.gather(
            *(raw.execute(alice, g, "payments.create_invoice", INVOICE) for g in grants
              for _ in range(6))
        )  # fmt: skip
        won = [sum(r.error is None for r in replies[i : i + 6]) for i in range(0, 180, 6)]
        assert won == [1] * 30, won
        assert {r.error for r in replies} == {None, "invalid_transaction"}
        assert (await raw.target_stats())["side_effects"] - before["side_effects"] == 30
        for g in grants:
            intents = await _intents(raw, g["transaction_id"])
            assert 1 <= len(intents) <= 2 and {e["outcome"] for e in intents} == {"ok"}
            th = hashlib.sha256(g["token"].encode()).hexdigest()
            text = json.dumps(intents)
            assert g["token"] not in text and th not in text
        redis = Redis.from_url(concurrent_intent.redis_url or "")
        try:
            made_up = hashlib.sha256(secrets.token_bytes(32)).hexdigest()
            await TokenStore(Scripts(redis)).release_intent(made_up, 7)
            assert not await redis.exists(f"handshake:tx:{{{made_up}}}")
        finally:
            await redis.aclose()


def test_intent_key_is_per_token_and_reveals_neither() -> None:
    a, b = hashlib.sha256(b"a").hexdigest(), hashlib.sha256(b"b").hexdigest()
    assert intent_key(a) == intent_key(a) != intent_key(b)
    assert a not in intent_key(a) and len(intent_key(a)) == 32


async def test_outbox_sends_at_once_and_retries_what_fails() -> None:
    """With a free slot the send starts in the same loop turn (no pump hop); a send that
    fails is retried until it succeeds, nothing lost."""
    sent: list[int] = []
    fail = {2: 2}  # item 2 fails twice

    async def send(item: int) -> None:
        if fail.get(item, 0):
            fail[item] -= 1
            raise TimeoutError
        sent.append(item)

    box: Outbox[int] = Outbox(send, limit=100, backoff_min=0.01, backoff_max=0.02)
    box.put(1)
    await asyncio.sleep(0)  # one turn: the send task ran
    assert sent == [1]
    for i in (2, 3, 4):
        box.put(i)
    assert await box.drain(5.0) == 0
    assert sorted(sent) == [1, 2, 3, 4] and box.retried == 2 and box.dropped == 0


async def test_every_worker_runs_on_uvloop(operator: Raw) -> None:
    infos = await discover(operator.nc, "INFO", 0.5)
    kinds = {i["name"]: i["metadata"].get("event_loop") for i in infos}
    assert {"handshake-authorize", "handshake-execute", "handshake-executor"} <= set(kinds)
    assert set(kinds.values()) == {"uvloop"}, kinds


@pytest.fixture
def js_url(tmp_path: Path) -> Iterator[str]:
    """A plain JetStream server of its own (no auth): the ack path in isolation."""
    port = free_port()
    proc = subprocess.Popen(
        [find_nats_server(), "-js", "-sd", str(tmp_path), "-a", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_port(port, "nats-server")
        yield f"nats://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait()


async def test_ack_publisher_acks_duplicates_and_errors(js_url: str) -> None:
    nc = await nats.connect(js_url)
    js = nc.jetstream()
    await js.add_stream(StreamConfig(name="A", subjects=["a.>"]))
    await js.add_stream(StreamConfig(name="ONE", subjects=["one.>"], max_msgs=1,
                                     discard=DiscardPolicy.NEW))  # fmt: skip
    acks = AckPublisher(nc)
    many = await asyncio.gather(
        *(acks.publish("a.x", b"{}", headers={"Nats-Msg-Id": f"{i}"}, timeout=5) for i in range(99))
    )
    assert sorted(a.seq for a in many) == list(range(1, 100))
    assert not any(a.duplicate for a in many) and {a.stream for a in many} == {"A"}
    again = await acks.publish("a.x", b"{}", headers={"Nats-Msg-Id": "7"}, timeout=5)
    assert again.duplicate and again.seq == next(a.seq for a in many if a.seq == again.seq)
    with pytest.raises(NoStreamResponseError):  # no stream takes the subject
        await acks.publish("b.x", b"{}", headers={"Nats-Msg-Id": "b"}, timeout=5)
    await acks.publish("one.x", b"{}", headers={"Nats-Msg-Id": "1"}, timeout=5)
    with pytest.raises(APIError):  # the stream refuses: full, discard new
        await acks.publish("one.x", b"{}", headers={"Nats-Msg-Id": "2"}, timeout=5)
    silent = await nc.subscribe("c.x")  # a responder that never acks
    t0 = time.monotonic()
    with pytest.raises(TimeoutError):
        await acks.publish("c.x", b"{}", headers={}, timeout=0.3)
    assert time.monotonic() - t0 < 2.0 and not acks._waiting
    await silent.unsubscribe()
    await nc.close()
