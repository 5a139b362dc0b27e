"""``SyncHandshakeClient`` against the real stack: blocking calls, threads, other loops, close."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from mcp_handshake.client import (
    ApprovalPending,
    CallResult,
    HandshakeClient,
    ProofKey,
    SyncHandshakeClient,
    UnknownTool,
)
from mcp_handshake.services.dev.devhome import mint_session
from mcp_handshake.services.dev.devstack import Stack
from mcp_handshake.shared.keys import generate_private_key

from .conftest import connected

RATE = {"base": "EUR", "quote": "USD"}
INVOICE = {"customer_id": "cus_8f3k2m9q", "amount": 12, "currency": "EUR"}


def sync_agent(stack: Stack, sub: str, *roles: str) -> SyncHandshakeClient:
    key = ProofKey(generate_private_key())
    token = mint_session(stack.home, sub, roles=list(roles), jkt=key.thumbprint)
    return SyncHandshakeClient(
        stack.nats_url or "",
        session=token,
        proof_key=key,
        connect_options=stack.agent_options(),
    )


def loop_threads() -> int:
    return sum(t.name == "handshake-client-loop" for t in threading.enumerate())


def test_blocking_api_mirrors_the_async_one(stack: Stack) -> None:
    with sync_agent(stack, "sync-alice", "billing") as hs:
        names = {t.name for t in hs.tools()}
        assert {"payments.list_invoices", "payments.create_invoice"} <= names
        res = hs.call("payments.get_exchange_rate", RATE)
        assert isinstance(res, CallResult) and res.claims["txn"] == res.transaction_id
        grant = hs.authorize("payments.list_invoices", {"limit": 1})
        done = hs.execute(grant, "payments.list_invoices", {"limit": 1})
        assert hs.verify_receipt(done.receipt, done.result, grant, "payments.list_invoices")
        assert hs.status(done.transaction_id).status == "executed"
        assert hs.keys()
        with pytest.raises(UnknownTool):
            hs.call("nope.nothing", {})


async def test_four_threads_share_one_client(stack: Stack) -> None:
    async with connected(stack) as raw:
        before = await raw.target_stats()
    hs = sync_agent(stack, "sync-bob", "billing")
    try:
        with ThreadPoolExecutor(4) as pool:
            results = await asyncio.get_running_loop().run_in_executor(
                None,
                lambda: list(
                    pool.map(lambda i: hs.call("payments.create_invoice", INVOICE), range(8))
                ),
            )
    finally:
        await asyncio.to_thread(hs.close)
    async with connected(stack) as raw:
        after = await raw.target_stats()
    assert len({r.transaction_id for r in results}) == 8
    assert all(r.claims["tool"] == "payments.create_invoice" for r in results)
    assert after["side_effects"] - before["side_effects"] == 8


def test_close_stops_the_loop_thread_and_refuses_more_calls(stack: Stack) -> None:
    base = loop_threads()
    hs = sync_agent(stack, "sync-carol", "billing")
    assert loop_threads() == base + 1
    assert hs.call("payments.get_exchange_rate", RATE).result["base"] == "EUR"
    hs.close()
    hs.close()  # idempotent
    assert hs.closed and loop_threads() == base
    with pytest.raises(RuntimeError, match="closed"):
        hs.tools()
    unused = sync_agent(stack, "sync-dave")
    unused.close()  # never connected
    assert loop_threads() == base


def test_batch_and_bounded_wait(stack: Stack) -> None:
    with sync_agent(stack, "sync-erin", "billing", "treasury") as hs:
        out = hs.call_many([("payments.get_exchange_rate", RATE)] * 3 + [("nope.x", {})])
        assert [type(r).__name__ for r in out] == ["CallResult"] * 3 + ["UnknownTool"]
        # Above the agent's auto-approve limit, to an unknown account: a human decides.
        pending = hs.submit(
            "payments.send_payment", {"to_account": "acct_zz0001", "amount": 500, "currency": "EUR"}
        )
        assert pending.grant.status == "pending_approval"
        with pytest.raises(ApprovalPending):
            hs.wait(pending, timeout_s=0.5)


async def test_usable_from_another_event_loop(stack: Stack) -> None:
    hs = sync_agent(stack, "sync-frank", "billing")
    try:
        client: HandshakeClient = hs.client
        a, b = await asyncio.gather(
            hs.arun(client.call("payments.get_exchange_rate", RATE)),
            hs.arun(client.call("payments.list_invoices", {"limit": 1})),
        )
        assert a.transaction_id != b.transaction_id
    finally:
        await asyncio.to_thread(hs.close)
