"""Fail closed: Redis down means fast `unavailable` and zero executions; then it resumes."""

from __future__ import annotations

import asyncio
import time

import pytest

from mcp_handshake.services.dev.devstack import Stack
from tests.conftest import connected

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


async def test_no_executor_is_unavailable_and_burns_nothing_else(own_stack: Stack) -> None:
    async with connected(own_stack) as raw:
        alice = raw.session("alice", "billing")
        own_stack.stop_proc("executor-0")
        g = (await raw.authorize(alice, "payments.list_invoices", {})).body
        r = await raw.execute(alice, g, "payments.list_invoices", {})
        assert r.error == "unavailable"
        assert r.body["error"]["transaction_id"] == g["transaction_id"]
