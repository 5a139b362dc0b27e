"""Reconcile over HTTP: an agent with only an HTTP client settles a transaction left
``outcome_unknown`` (its executor killed mid-POST) through ``POST /v1/reconcile``, as an
agent on NATS does; the target sees one payment, and the receipt verifies."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from mcp_handshake.services.dev.devstack import Stack, StackSpec
from tests.conftest import connected
from tests.support.http_agent import HttpAgent, error_of, verify_receipt

pytestmark = [pytest.mark.fault, pytest.mark.timeout(120)]

SLOW = {"to_account": "acct_9e1c7b", "amount": 17.0, "currency": "EUR", "delay_s": 1.5}


@pytest.fixture
def gw_stack(stack_factory: Callable[..., Stack]) -> Stack:
    return stack_factory(StackSpec(gateway=1))


async def test_outcome_unknown_reconciled_over_http(gw_stack: Stack) -> None:
    st = gw_stack
    async with httpx.AsyncClient(timeout=30) as client, connected(st) as raw:
        agent = HttpAgent(client, st, st.gateway_url)
        rita = agent.session("rita-http", "billing")
        before = (await raw.target_stats())["side_effects"]
        g = await agent.authorize(rita, "test.slow_payment", SLOW)
        assert g.status_code == 200, g.text
        grant: dict[str, Any] = g.json()
        txn = grant["transaction_id"]
        running = asyncio.create_task(agent.execute(rita, grant, "test.slow_payment", SLOW))
        deadline = time.monotonic() + 10
        while (await raw.target_stats())["side_effects"] != before + 1:
            assert time.monotonic() < deadline, "the target never saw the payment"
            await asyncio.sleep(0.05)
        (executor,) = [p for p in st.procs if p.name == "executor-0"]
        executor.popen.kill()  # SIGKILL, mid-POST
        lost = await running
        assert error_of(lost) == "outcome_unknown", lost.text
        st.stop_proc("executor-0")
        st.start_worker("executor", 0)
        await st.wait_ready({"handshake-executor": 1})

        url = f"{st.gateway_url}/v1/reconcile"
        key = agent.key_of(rita)
        # no transaction token: reconcile takes the session and (here) a proof only
        headers = {"Authorization": f"Bearer {rita}"}
        no_proof = await client.post(url, headers=headers, json={"transaction_id": txn})
        assert error_of(no_proof) == "validation_failed", no_proof.text
        proof = key.proof(txn, "handshake.reconcile", "reconcile")
        r = await client.post(url, headers={**headers, "Handshake-Proof": proof},
                              json={"transaction_id": txn})  # fmt: skip
        assert r.status_code == 200, r.text
        body = r.json()
        jwks = (await client.get(f"{st.gateway_url}/v1/keys")).json()
        claims = verify_receipt(body["receipt"], jwks)
        assert claims["reconciled"] == 1 and claims["txn"] == txn
        assert body["result"]["status"] == "sent"
        assert (await raw.target_stats())["side_effects"] == before + 1  # one payment
        again = await client.post(url, headers={**headers, "Handshake-Proof": key.proof(
            txn, "handshake.reconcile", "reconcile")}, json={"transaction_id": txn})  # fmt: skip
        assert error_of(again) == "invalid_transaction", again.text
