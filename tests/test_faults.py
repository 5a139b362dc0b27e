"""Fail closed: Redis down means fast `unavailable` and zero executions; then it resumes."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from nats.aio.msg import Msg

from mcp_handshake.services.dev.devstack import Stack
from tests.conftest import Raw, connected
from tests.test_batch import EXCHANGE, RATE, authorize_many, code, execute_many, op

INVOICE = {"customer_id": "cus_8f3k2m9q", "amount": 12.5, "currency": "EUR"}

pytestmark = pytest.mark.fault


async def test_redis_down_fails_closed_and_recovers(own_stack: Stack) -> None:
    async with connected(own_stack) as raw:
        alice = raw.session("alice", "billing")
        ok = await raw.authorize(alice, "payments.create_invoice", INVOICE)
        assert ok.error is None
        pending = ok.body
        workers = {p.name: p.popen.pid for p in own_stack.procs if p.name.endswith("-0")}
        before = await raw.target_stats()

        own_stack.stop_proc("redis-server")
        for _ in range(5):
            t0 = time.monotonic()
            r = await raw.authorize(alice, "payments.create_invoice", INVOICE)
            assert r.error == "unavailable" and r.body["error"]["retryable"] is True
            assert time.monotonic() - t0 < 2.0
            t0 = time.monotonic()
            r = await raw.execute(alice, pending, "payments.create_invoice", INVOICE)
            assert r.error == "unavailable"
            assert time.monotonic() - t0 < 2.0
        assert (await raw.target_stats()) == before, "nothing may execute without the store"

        own_stack.start_redis()  # same port, empty (as after a failover without persistence)
        deadline = time.monotonic() + 5
        while True:
            g = await raw.authorize(alice, "payments.create_invoice", INVOICE)
            if g.error is None or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.1)
        assert g.error is None, g.body
        done = await raw.execute(alice, g.body, "payments.create_invoice", INVOICE)
        assert done.error is None, done.body
        still = {p.name: p.popen.pid for p in own_stack.procs if p.name.endswith("-0")}
        assert still == workers and all(p.popen.poll() is None for p in own_stack.procs)


async def test_redis_down_mid_batch_fails_closed_per_operation(own_stack: Stack) -> None:
    """Redis stopped between a batch's two phases: every operation of ``execute.batch``
    and ``authorize.batch`` answers ``unavailable`` (fast), nothing runs, and once Redis
    is back (empty) no token of the batch runs either."""
    async with connected(own_stack) as raw:
        alice = raw.session("alice", "billing")
        grants = await authorize_many(raw, alice, [(EXCHANGE, RATE)] * 3)
        ops = [op(g, EXCHANGE, RATE) for g in grants]
        before = await raw.target_stats()
        own_stack.stop_proc("redis-server")
        t0 = time.monotonic()
        assert [code(r) for r in await execute_many(raw, alice, ops)] == ["unavailable"] * 3
        assert time.monotonic() - t0 < 2.5
        t0 = time.monotonic()
        again = await authorize_many(raw, alice, [(EXCHANGE, RATE)] * 2)
        assert [code(r) for r in again] == ["unavailable"] * 2
        assert time.monotonic() - t0 < 2.5
        assert await raw.target_stats() == before, "nothing may execute without the store"

        own_stack.start_redis()
        deadline = time.monotonic() + 5
        while True:
            fresh = await authorize_many(raw, alice, [(EXCHANGE, RATE)])
            if code(fresh[0]) is None or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.1)
        assert code(fresh[0]) is None, fresh
        replay = await execute_many(raw, alice, [*ops, op(fresh[0], EXCHANGE, RATE)])
        assert [code(r) for r in replay] == [*["invalid_transaction"] * 3, None]
        after = await raw.target_stats()
        assert sum(after["calls"].values()) == sum(before["calls"].values()) + 1


async def test_no_executor_is_unavailable_and_burns_nothing_else(own_stack: Stack) -> None:
    async with connected(own_stack) as raw:
        alice = raw.session("alice", "billing")
        own_stack.stop_proc("executor-0")
        g = (await raw.authorize(alice, "payments.list_invoices", {})).body
        other = (await raw.authorize(alice, "payments.list_invoices", {})).body
        before = await raw.target_stats()
        r = await raw.execute(alice, g, "payments.list_invoices", {})
        assert r.error == "unavailable"
        assert r.body["error"]["transaction_id"] == g["transaction_id"]
        assert await raw.target_stats() == before, "nothing may reach the target"
        # the token is used up (a retry needs a new authorize) and its status says so
        assert (await raw.execute(alice, g, "payments.list_invoices", {})).error == (
            "invalid_transaction"
        )
        assert await _status_soon(raw, alice, g["transaction_id"], "failed")
        # every other token is intact: it runs once an executor is back
        own_stack.start_worker("executor", 0)
        await own_stack.wait_ready({"handshake-executor": 1})
        assert await _status_soon(raw, alice, other["transaction_id"], "granted")
        done = await raw.execute(alice, other, "payments.list_invoices", {})
        assert done.error is None, done.body
        after = await raw.target_stats()
        assert after["calls"]["list_invoices"] == before["calls"].get("list_invoices", 0) + 1


async def test_executor_without_the_store_runs_nothing(own_stack: Stack) -> None:
    """A genuine dispatch replayed while Redis is down: the executor cannot claim the
    dispatch, so it refuses (unavailable) instead of running it."""
    async with connected(own_stack) as raw:
        carol = raw.session("carol", "support")
        params = {"customer_id": "cus_8f3k2m9q"}
        captured: list[Msg] = []

        async def keep(msg: Msg) -> None:
            captured.append(msg)

        async with (
            connected(own_stack, "executor") as spy,
            connected(own_stack, "execute") as pub,
        ):
            sub = await spy.nc.subscribe(raw.s.executor("payments"), cb=keep)
            await spy.nc.flush()
            g = (await raw.authorize(carol, "customers.get_customer", params)).body
            assert (await raw.execute(carol, g, "customers.get_customer", params)).error is None
            await sub.unsubscribe()
            (msg,) = captured
            before = await raw.target_stats()
            own_stack.stop_proc("redis-server")
            # still within the dispatch's lifetime (else it would be refused as expired)
            assert time.time() < json.loads(msg.data)["exp"]
            reply = await pub.nc.request(msg.subject, msg.data, timeout=5, headers=msg.headers)
        assert reply.headers and reply.headers.get("Nats-Service-Error") == "unavailable"
        assert b"Jane" not in reply.data
        assert await raw.target_stats() == before


async def _status_soon(raw: Raw, session: str, txn: str, expected: str) -> bool:
    """Whether the transaction's status becomes ``expected`` within a few seconds."""
    deadline = time.monotonic() + 5
    while True:
        r = await raw.request(raw.s.status, {"transaction_id": txn}, session)
        if r.body.get("status") == expected:
            return True
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.1)
