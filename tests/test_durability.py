"""Durable state: a Redis restart that loses everything loses no registered key and no
pending approval (the registry and the approvals' durable copy live in NATS KV)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from redis.asyncio import Redis

from mcp_handshake.services.dev.devstack import Stack
from mcp_handshake.services.store import KeyRegistry
from tests.conftest import Raw, connected

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

LIST = {"status": "open"}
PAYMENT = {"to_account": "acct_4f9d2a", "amount": 2500, "currency": "EUR"}


async def _pending_listed(raw: Raw, approver: str, txn: str, timeout: float = 15) -> Any:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        listed = await raw.request(raw.s.approvals_list, {}, approver)
        if listed.error is None:
            for item in listed.body["approvals"]:
                if item["transaction_id"] == txn:
                    return item
        assert asyncio.get_running_loop().time() < deadline, listed.body
        await asyncio.sleep(0.3)


async def _keys_in_redis(stack: Stack) -> int:
    client = Redis.from_url(stack.redis_url or "")
    try:
        return int(await client.dbsize())
    finally:
        await client.aclose()


async def test_keys_and_pending_approvals_survive_an_empty_redis(own_stack: Stack) -> None:
    async with connected(own_stack) as raw:
        # a registered key (session not bound to it) and a pending human approval
        erin = raw.session("erin", "billing", bind=False)
        async with connected(own_stack, "operator") as op:
            await KeyRegistry(op.nc.jetstream(), create=True).register("erin", raw.key("erin").jwk)
        tess = raw.session("tess", "treasury")
        victor = raw.session("victor", "approver")
        g = await raw.authorize(tess, "payments.send_payment", PAYMENT)
        assert g.error is None and g.body["status"] == "pending_approval", g.body
        txn = g.body["transaction_id"]
        before = await _pending_listed(raw, victor, txn)

        own_stack.stop_proc("redis-server")
        own_stack.start_redis()  # same port and password, nothing kept

        # the approval worker restores the pending approval; the registry never left
        item = await _pending_listed(raw, victor, txn)
        assert item["preview_hash"] == before["preview_hash"]
        assert await _keys_in_redis(own_stack) > 0
        st = await raw.request(raw.s.status, {"transaction_id": txn}, tess)
        assert st.error is None and st.body["status"] == "pending_approval", st.body

        gi = await raw.authorize(erin, "payments.list_invoices", LIST)
        assert gi.error is None, gi.body
        r = await raw.execute(erin, gi.body, "payments.list_invoices", LIST)
        assert r.error is None, r.body

        ok = await raw.decide(victor, txn, "approve")  # signed: victor's session is bound
        assert ok.error is None and ok.body["status"] == "approved", ok.body
        done = await raw.execute(tess, g.body, "payments.send_payment", PAYMENT)
        assert done.error is None, done.body
        # decided: the durable copy is gone, so a second loss cannot revive it as pending
        own_stack.stop_proc("redis-server")
        own_stack.start_redis()
        await asyncio.sleep(2.5)
        listed = await raw.request(raw.s.approvals_list, {}, victor)
        assert listed.error is None
        assert txn not in {a["transaction_id"] for a in listed.body["approvals"]}
