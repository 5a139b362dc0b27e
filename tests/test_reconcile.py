"""Reconciling a transaction left ``outcome_unknown``: the same operation again under the
same Idempotency-Key, once per run, by its original caller, with a verified receipt and
the run in the audit trail; the target sees one side effect."""

from __future__ import annotations

import asyncio
import json
import re
import time
from typing import Any

import pytest

from mcp_handshake.client import HandshakeClient, InvalidTransaction, ProofKey
from mcp_handshake.services.dev.devhome import mint_session
from mcp_handshake.services.dev.devstack import Stack
from mcp_handshake.shared.keys import generate_private_key
from tests.conftest import Raw, connected
from tests.test_audit import events

pytestmark = [pytest.mark.fault, pytest.mark.timeout(120)]

SLOW = {"to_account": "acct_4f9d2a", "amount": 42.0, "currency": "EUR", "delay_s": 1.5}


def _agent(stack: Stack, sub: str) -> HandshakeClient:
    key = ProofKey(generate_private_key())
    token = mint_session(stack.home, sub, roles=["billing"], jkt=key.thumbprint)
    return HandshakeClient(stack.nats_url or "", session=token, proof_key=key,  # type: ignore[arg-type]
                           connect_options=stack.agent_options())  # fmt: skip


async def _side_effects(raw: Raw) -> int:
    return int((await raw.target_stats())["side_effects"])


async def _until(pred: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not await pred():
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)


async def test_executor_killed_mid_post_then_reconciled(own_stack: Stack) -> None:
    async with connected(own_stack) as raw, _agent(own_stack, "rita") as rita:
        before = await _side_effects(raw)
        grant = await rita.authorize("test.slow_payment", SLOW)
        assert grant.tier == "internal"
        txn = grant.transaction_id
        running = asyncio.create_task(rita.execute(grant, "test.slow_payment", SLOW))

        async def paid() -> bool:
            return await _side_effects(raw) == before + 1

        await _until(paid)  # the target made the payment and is still answering
        (executor,) = [p for p in own_stack.procs if p.name == "executor-0"]
        executor.popen.kill()  # SIGKILL, mid-POST
        with pytest.raises(Exception) as lost:
            await running
        assert getattr(lost.value, "code", None) == "outcome_unknown"
        assert (await rita.status(txn)).status == "outcome_unknown"

        # someone else may not reconcile it; nor may it run without an executor
        async with _agent(own_stack, "mallory") as mallory:
            with pytest.raises(InvalidTransaction):
                await mallory.reconcile(txn)
        own_stack.stop_proc("executor-0")
        own_stack.start_worker("executor", 0)
        await own_stack.wait_ready({"handshake-executor": 1})

        res = await rita.reconcile(txn)  # receipt verified by the client
        assert res.transaction_id == txn and res.result["status"] == "sent"
        assert res.claims["reconciled"] == 1 and res.claims["tool"] == "test.slow_payment"
        assert res.claims["ph"] == grant.params_hash and res.claims["sub"] == "rita"
        assert await _side_effects(raw) == before + 1  # exactly one payment
        assert (await rita.status(txn)).status == "executed"
        with pytest.raises(InvalidTransaction):
            await rita.reconcile(txn)  # settled: nothing left to reconcile

    deadline = time.monotonic() + 15
    wanted = {"execute.intent", "execute.reconcile_intent", "execute.reconciled"}
    while True:
        kinds = {e["kind"] for e in events(own_stack) if e.get("txn") == txn}
        if wanted <= kinds or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.2)
    assert wanted <= kinds, kinds


async def test_reconcile_needs_a_proof_and_a_tool_safe_to_repeat(own_stack: Stack) -> None:
    async with connected(own_stack) as raw:
        # a plain POST whose answer comes after the executor's deadline: outcome unknown
        sam = raw.session("sam", "billing")
        params = {**SLOW, "delay_s": 3.0}
        g = await raw.authorize(sam, "test.slow_plain_post", params)
        r = await raw.execute(sam, g.body, "test.slow_plain_post", params)
        assert r.error == "outcome_unknown", r.body
        txn = g.body["transaction_id"]
        refused = await raw.request(raw.s.reconcile, {"transaction_id": txn}, sam)
        assert refused.error == "forbidden", refused.body  # not safe to send again

        # internal tier: without a proof, or with an execute-style one, refused
        g = await raw.authorize(sam, "test.slow_payment", params)
        r = await raw.execute(sam, g.body, "test.slow_payment", params)
        assert r.error == "outcome_unknown", r.body
        txn = g.body["transaction_id"]
        bare = await raw.request(raw.s.reconcile, {"transaction_id": txn}, sam)
        assert bare.error == "validation_failed", bare.body
        wrong = raw.key("sam").proof(txn, "test.slow_payment", g.body["params_hash"])
        r = await raw.request(raw.s.reconcile, {"transaction_id": txn}, sam,
                              {"Handshake-Proof": wrong})  # fmt: skip
        assert r.error == "validation_failed", r.body
        await asyncio.sleep(1.5)  # the first answer has come (late) by now
        proof = raw.key("sam").proof(txn, "handshake.reconcile", "reconcile")
        ok = await raw.request(raw.s.reconcile, {"transaction_id": txn}, sam,
                               {"Handshake-Proof": proof})  # fmt: skip
        assert ok.error is None, ok.body
        replay = await raw.request(raw.s.reconcile, {"transaction_id": txn}, sam,
                                   {"Handshake-Proof": proof})  # fmt: skip
        assert replay.error in {"invalid_transaction", "validation_failed"}


def test_cli_reconcile(stack: Stack) -> None:
    from tests.test_cli import INVALID, OUTCOME_UNKNOWN, cli

    minted = cli(stack, "token", "mint", "--sub", "cli-rick", "--role", "billing", "--bind-key")
    session = minted.stdout.strip()
    params = json.dumps({**SLOW, "delay_s": 3.0})
    lost = cli(stack, "call", "test.slow_payment", "--params", params, session=session)
    assert lost.returncode == OUTCOME_UNKNOWN, lost.stderr
    txn = re.findall(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", lost.stderr)
    assert txn, lost.stderr
    done = cli(stack, "reconcile", txn[0], session=session)
    assert done.returncode == 0, done.stderr
    body = json.loads(done.stdout)
    assert body["transaction_id"] == txn[0] and body["receipt"]["reconciled"] == 1
    again = cli(stack, "reconcile", txn[0], session=session)
    assert again.returncode == INVALID and again.stderr.startswith("invalid_transaction: ")
