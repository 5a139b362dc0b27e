"""The audit trail: every step recorded, execution gated on the intent, tamper-evident log."""

from __future__ import annotations

import asyncio
import json
import random
import shutil
import signal
import time
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from mcp_handshake.services.audit.chain import read_entries
from mcp_handshake.services.audit.verify import verify_log
from mcp_handshake.services.dev.devstack import Stack, StackSpec
from mcp_handshake.services.runtime.audit import STREAM, ensure_audit_stream
from tests.conftest import Raw, connected, make_stack

RATE = {"base": "EUR", "quote": "USD"}
LIST = {"status": None, "limit": 20}


def log_path(stack: Stack) -> Path:
    return stack.home / "audit" / "audit.log"


def events(stack: Stack) -> list[dict[str, Any]]:
    return [e["body"]["event"] for e in read_entries(log_path(stack)) if e["kind"] == "event"]


async def story(
    stack: Stack, txn: str, kinds: set[str], timeout: float = 15.0
) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        mine = [e for e in events(stack) if e.get("txn") == txn]
        if kinds <= {e["kind"] for e in mine} or time.monotonic() > deadline:
            return mine
        await asyncio.sleep(0.2)


async def test_every_step_of_a_restricted_payment_is_audited(raw: Raw) -> None:
    tess = raw.session("tess-audit", "treasury")
    # an amount distinctive enough that no worker id (host:pid) can contain it by chance
    params = {"to_account": "acct_4f9d2a", "amount": 1499.37, "currency": "EUR"}
    g = (await raw.authorize(tess, "payments.send_payment", params)).body
    txn = g["transaction_id"]
    await asyncio.sleep(0.5)
    r = await raw.decide(raw.session("victor", "approver"), txn, "approve")
    assert r.error is None, r.body
    assert (await raw.execute(tess, g, "payments.send_payment", params)).error is None
    expected = {
        "authorize.granted",
        "approval.requested",
        "approval.passed",
        "approval.decided",
        "execute.intent",
        "execute.succeeded",
        "receipt.issued",
    }
    mine = await story(raw.stack, txn, expected)
    kinds = {e["kind"] for e in mine}
    assert expected <= kinds, kinds
    for e in mine:
        assert e["txn"] == txn and e["sub"] == "tess-audit" and e["tool"] == "payments.send_payment"
        assert e["worker"] and e["at"] > 0
    decided = next(e for e in mine if e["kind"] == "approval.decided")
    assert decided["by"] == "victor" and decided["preview_hash"].startswith("sha256:")
    granted = next(e for e in mine if e["kind"] == "authorize.granted")
    assert granted["ph"] == g["params_hash"] and granted["tier"] == "restricted"
    text = json.dumps(mine)
    assert "acct_4f9d2a" not in text and "1499.37" not in text and g["token"] not in text


async def test_denials_and_replays_are_each_recorded(raw: Raw) -> None:
    alice = raw.session("alice", "billing")
    g = (await raw.authorize(alice, "payments.list_invoices", LIST)).body
    assert (await raw.execute(alice, g, "payments.list_invoices", LIST)).error is None
    for _ in range(3):
        assert (await raw.execute(alice, g, "payments.list_invoices", LIST)).error == (
            "invalid_transaction"
        )
    mine = await story(raw.stack, g["transaction_id"], {"execute.denied"})
    await asyncio.sleep(0.5)
    mine = [e for e in events(raw.stack) if e.get("txn") == g["transaction_id"]]
    denied = [e for e in mine if e["kind"] == "execute.denied"]
    assert len(denied) == 3 and {e["outcome"] for e in denied} == {"invalid_transaction"}


async def test_lost_consume_cannot_become_a_replay(raw: Raw, redis: Redis) -> None:
    """After a successful execute, the consumed state is put back by hand (a consume
    lost in a Redis failover): the replay is refused by the audit intent, target untouched."""
    alice = raw.session("alice", "billing")
    g = (await raw.authorize(alice, "payments.list_invoices", LIST)).body
    assert (await raw.execute(alice, g, "payments.list_invoices", LIST)).error is None
    th = (await redis.get(f"handshake:txn:{{{g['transaction_id']}}}")).decode().split()[0]
    await redis.hset(f"handshake:tx:{{{th}}}", "status", "granted")
    await redis.expire(f"handshake:tx:{{{th}}}", 30)
    before = await raw.target_stats()
    r = await raw.execute(alice, g, "payments.list_invoices", LIST)
    assert r.error == "invalid_transaction", r.body
    assert (await raw.target_stats())["calls"] == before["calls"]


@pytest.mark.fault
async def test_audit_stream_down_fails_closed(own_stack: Stack) -> None:
    async with connected(own_stack) as raw:
        alice = raw.session("alice", "billing")
        g = (await raw.authorize(alice, "payments.list_invoices", LIST)).body
        before = await raw.target_stats()
        async with connected(own_stack, "operator") as operator:
            await operator.nc.jetstream().delete_stream(STREAM)
            r = await raw.execute(alice, g, "payments.list_invoices", LIST)
            assert r.error == "unavailable" and r.body["error"]["retryable"] is True
            assert (await raw.target_stats())["calls"] == before["calls"]
            await ensure_audit_stream(operator.nc.jetstream(), 900)
        g = (await raw.authorize(alice, "payments.list_invoices", LIST)).body
        assert (await raw.execute(alice, g, "payments.list_invoices", LIST)).error is None


@pytest.mark.fault
@pytest.mark.slow
async def test_audit_worker_down_then_up_writes_everything_once(own_stack: Stack) -> None:
    async with connected(own_stack) as raw:
        own_stack.stop_proc("audit-0")
        alice = raw.session("alice", "billing")

        async def one() -> str:
            g = (await raw.authorize(alice, "payments.get_exchange_rate", RATE)).body
            assert (await raw.execute(alice, g, "payments.get_exchange_rate", RATE)).error is None
            return str(g["transaction_id"])

        txns: list[str] = []
        for _ in range(10):
            txns += await asyncio.gather(*(one() for _ in range(50)))
        assert len(txns) == 500
        own_stack.start_worker("audit", 0)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            got = {e["txn"] for e in events(own_stack) if e["kind"] == "receipt.issued"}
            if set(txns) <= got:
                break
            await asyncio.sleep(0.3)
        all_events = events(own_stack)
        ids = [e["id"] for e in all_events]
        assert len(ids) == len(set(ids)), "an event was written twice"
        per_txn = {t: 0 for t in txns}
        for e in all_events:
            if e.get("txn") in per_txn:
                per_txn[e["txn"]] += 1
        assert set(per_txn.values()) == {4}  # granted, intent, succeeded, receipt


@pytest.mark.fault
async def test_standby_audit_worker_takes_over(own_stack: Stack) -> None:
    async with connected(own_stack) as raw:
        own_stack.start_worker("audit", 1)
        await own_stack.wait_ready({"handshake-audit": 2})
        alice = raw.session("alice", "billing")
        g1 = (await raw.authorize(alice, "payments.get_exchange_rate", RATE)).body
        await story(own_stack, g1["transaction_id"], {"authorize.granted"})
        active = next(p for p in own_stack.procs if p.name == "audit-0")
        active.popen.send_signal(signal.SIGKILL)  # dies without a goodbye
        active.popen.wait()
        g2 = (await raw.authorize(alice, "payments.get_exchange_rate", RATE)).body
        mine = await story(own_stack, g2["transaction_id"], {"authorize.granted"})
        assert mine, "the standby did not take over"
        ids = [e["id"] for e in events(own_stack)]
        assert len(ids) == len(set(ids))


def _tamper(lines: list[str], rng: random.Random) -> tuple[str, list[str]]:
    n = len(lines)
    kind = rng.choice(["edit", "delete", "insert", "reorder", "truncate"])
    out = list(lines)
    i = rng.randrange(n)
    if kind == "edit":
        line = out[i]
        pos = rng.randrange(len(line) - 1)
        ch = line[pos]
        repl = rng.choice([c for c in "0123456789abcdefxyz" if c != ch])
        out[i] = line[:pos] + repl + line[pos + 1 :]
    elif kind == "delete":
        del out[i]
    elif kind == "insert":
        out.insert(rng.randrange(n + 1), out[rng.randrange(n)])
    elif kind == "reorder":
        j = rng.choice([k for k in range(n) if k != i])
        out[i], out[j] = out[j], out[i]
    else:
        keep = rng.randrange(n)
        out = out[:keep]
        if rng.random() < 0.5 and keep < n:
            out.append(lines[keep][: rng.randrange(1, len(lines[keep]))])
    return kind, out


@pytest.mark.slow
def test_one_thousand_random_tamperings_are_all_detected(tmp_path: Path) -> None:
    stack = make_stack(tmp_path / "home", StackSpec())
    try:
        asyncio.run(stack.start())
        asyncio.run(_traffic(stack, 40))
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and len(events(stack)) < 160:
            time.sleep(0.2)
    finally:
        stack.stop()  # the writer's last act is a signed checkpoint
    log = log_path(stack)
    jwks = json.loads((stack.home / "keys" / "audit.jwks.json").read_text())
    clean = verify_log(log, jwks)
    assert clean.ok, clean
    assert clean.entries >= 160 and clean.checkpoints >= 1
    lines = log.read_text().splitlines(keepends=True)
    rng = random.Random(20261124)
    work = tmp_path / "tampered"
    work.mkdir()
    shutil.copy(log.with_name(log.name + ".checkpoints"), work / "audit.log.checkpoints")
    missed = []
    seen_kinds: dict[str, int] = {}
    for n in range(1000):
        kind, out = _tamper(lines, rng)
        if out == lines:
            continue
        seen_kinds[kind] = seen_kinds.get(kind, 0) + 1
        (work / "audit.log").write_text("".join(out))
        result = verify_log(work / "audit.log", jwks)
        if result.ok:
            missed.append((n, kind))
    assert missed == []
    assert set(seen_kinds) == {"edit", "delete", "insert", "reorder", "truncate"}
    assert sum(seen_kinds.values()) >= 990


async def _traffic(stack: Stack, n: int) -> None:
    async with connected(stack) as raw:
        alice = raw.session("alice", "billing")
        for _ in range(n):
            g = (await raw.authorize(alice, "payments.list_invoices", LIST)).body
            assert (await raw.execute(alice, g, "payments.list_invoices", LIST)).error is None


async def test_expired_unused_tokens_are_counted(raw: Raw, redis: Redis) -> None:
    from mcp_handshake.shared.subjects import Keys

    before = int(await redis.get(Keys.EXPIRED) or 0)
    anyone = raw.session("expiry-counter")
    used = (await raw.authorize(anyone, "test.echo", {"text": "a"})).body  # TTL 1 s
    unused = (await raw.authorize(anyone, "test.echo", {"text": "b"})).body
    assert await redis.zscore(Keys.LIVE, unused["transaction_id"]) is not None
    assert (await raw.execute(anyone, used, "test.echo", {"text": "a"})).error is None
    deadline = time.monotonic() + 12  # the approval workers sweep every 5 s
    while time.monotonic() < deadline:
        gone = await redis.zscore(Keys.LIVE, unused["transaction_id"]) is None
        if gone and int(await redis.get(Keys.EXPIRED) or 0) > before:
            break
        await asyncio.sleep(0.3)
    assert await redis.zscore(Keys.LIVE, unused["transaction_id"]) is None
    assert await redis.zscore(Keys.LIVE, used["transaction_id"]) is None
    assert int(await redis.get(Keys.EXPIRED) or 0) > before
