"""Restricted tier: the confirmation agent, human approvers, quorum, expiry, durability."""

from __future__ import annotations

import asyncio
import hashlib
import json
import subprocess
import sys
import time
from typing import Any

import jwt
import pytest
import rfc8785

from mcp_handshake.services.audit.chain import read_entries
from mcp_handshake.services.dev.devstack import Stack
from tests.conftest import Raw, connected

KNOWN = "acct_4f9d2a"


def payment(amount: float, to: str = KNOWN) -> dict[str, Any]:
    return {"to_account": to, "amount": amount, "currency": "EUR"}


async def _pending(raw: Raw, session: str, tool: str, params: dict[str, Any]) -> dict[str, Any]:
    r = await raw.authorize(session, tool, params)
    assert r.error is None, r.body
    assert r.body["status"] == "pending_approval" and r.body["tier"] == "restricted"
    return r.body


async def _status(raw: Raw, session: str, txn: str, wait_s: float = 0) -> dict[str, Any]:
    body: dict[str, Any] = {"transaction_id": txn}
    if wait_s:
        body["wait_s"] = wait_s
    r = await raw.request(raw.s.status, body, session, timeout=wait_s + 10)
    assert r.error is None, r.body
    return r.body


async def _decide(raw: Raw, session: str, txn: str, decision: str) -> Any:
    return await raw.decide(session, txn, decision)


async def test_agent_approves_small_known_payment(raw: Raw) -> None:
    tess = raw.session("tess-a", "treasury")
    g = await _pending(raw, tess, "payments.send_payment", payment(20))
    st = await _status(raw, tess, g["transaction_id"], wait_s=10)
    assert st["status"] == "approved" and st["decided_by"] == "confirmation-agent"
    r = await raw.execute(tess, g, "payments.send_payment", payment(20))
    assert r.error is None, r.body
    claims = jwt.decode(r.body["receipt"], options={"verify_signature": False})
    assert [a["by"] for a in claims["approvals"]] == ["confirmation-agent"]
    assert claims["tier"] == "restricted"


async def test_agent_denies_huge_payment(raw: Raw) -> None:
    tess = raw.session("tess-b", "treasury")
    before = await raw.target_stats()
    g = await _pending(raw, tess, "payments.send_payment", payment(75_000))
    st = await _status(raw, tess, g["transaction_id"], wait_s=10)
    assert st["status"] == "denied"
    r = await raw.execute(tess, g, "payments.send_payment", payment(75_000))
    assert r.error == "approval_denied"
    assert (await raw.target_stats())["side_effects"] == before["side_effects"]


async def test_human_approval_with_preview_and_self_approval_refused(raw: Raw, redis: Any) -> None:
    tess = raw.session("tess-c", "treasury", "approver")  # may approve, but not herself
    victor = raw.session("victor", "approver")
    params = payment(2500)
    g = await _pending(raw, tess, "payments.send_payment", params)
    txn = g["transaction_id"]
    # not executable yet
    early = await raw.execute(tess, g, "payments.send_payment", params)
    assert early.error == "approval_pending" and early.body["error"]["retryable"] is True
    # the agent passes it to humans; the approver sees every field of the effect in full
    await asyncio.sleep(0.5)
    listed = await raw.request(raw.s.approvals_list, {}, victor)
    item = next(a for a in listed.body["approvals"] if a["transaction_id"] == txn)
    assert item["preview"]["to_account"] == params["to_account"]  # the full recipient
    assert item["preview"]["amount"] == 2500
    assert (
        item["preview_hash"]
        == "sha256:" + hashlib.sha256(rfc8785.dumps(item["preview"])).hexdigest()
    )
    own = await raw.request(raw.s.approvals_list, {}, tess)
    assert txn not in {a["transaction_id"] for a in own.body["approvals"]}
    refused = await _decide(raw, tess, txn, "approve")
    assert refused.error == "forbidden"
    not_approver = await _decide(raw, raw.session("mallory", "treasury"), txn, "approve")
    assert not_approver.error == "forbidden"
    # a long-poll answers as soon as the decision lands
    poll = asyncio.create_task(_status(raw, tess, txn, wait_s=20))
    await asyncio.sleep(0.3)
    t0 = time.monotonic()
    ok = await _decide(raw, victor, txn, "approve")
    assert ok.error is None and ok.body["status"] == "approved"
    st = await poll
    assert st["status"] == "approved" and st["decided_by"] == "victor"
    assert time.monotonic() - t0 < 3
    r = await raw.execute(tess, g, "payments.send_payment", params)
    assert r.error is None, r.body
    claims = jwt.decode(r.body["receipt"], options={"verify_signature": False})
    assert [a["by"] for a in claims["approvals"]] == ["victor"]
    # the decision recorded the preview hash the approver saw
    th = (await redis.get(f"handshake:txn:{{{txn}}}")).decode().split()[0]
    decisions = json.loads(await redis.hget(f"handshake:tx:{{{th}}}", "decisions"))
    assert decisions[-1]["by"] == "victor" and decisions[-1]["preview_hash"] == item["preview_hash"]


async def test_human_denial(raw: Raw) -> None:
    tess = raw.session("tess-d", "treasury")
    g = await _pending(raw, tess, "payments.send_payment", payment(900, "acct_unknown1"))
    await asyncio.sleep(0.3)
    r = await _decide(raw, raw.session("victor", "approver"), g["transaction_id"], "deny")
    assert r.error is None and r.body["status"] == "denied"
    assert (await _status(raw, tess, g["transaction_id"]))["status"] == "denied"
    r = await raw.execute(tess, g, "payments.send_payment", payment(900, "acct_unknown1"))
    assert r.error == "approval_denied"


async def test_quorum_of_two_and_votes_count_once(raw: Raw) -> None:
    req = raw.session("quinn")
    params = {"text": "two keys"}
    g = await _pending(raw, req, "test.two_approvers", params)
    txn = g["transaction_id"]
    victor = raw.session("victor", "approver")
    await asyncio.sleep(0.5)  # the confirmation agent passes it to humans
    assert await raw.preview_hash(victor, txn) is not None
    assert (await raw.decide(victor, txn, "approve", sign=False)).error == "validation_failed"
    # the same approver, many times at once, through both approval workers
    replies = await asyncio.gather(*(_decide(raw, victor, txn, "approve") for _ in range(10)))
    assert all(r.error is None for r in replies)
    assert {r.body["approvals"] for r in replies} == {1}
    st = await _status(raw, req, txn)
    assert st["status"] == "pending_approval"
    assert (await raw.execute(req, g, "test.two_approvers", params)).error == "approval_pending"
    # two different approvers at once: both votes count, quorum met once
    g2 = await _pending(raw, req, "test.two_approvers", params)
    wendy = raw.session("wendy", "approver")
    await asyncio.sleep(0.5)
    for approver in (victor, wendy):
        assert await raw.preview_hash(approver, g2["transaction_id"]) is not None
    await raw.preview_hash(wendy, txn)
    both = await asyncio.gather(
        _decide(raw, victor, g2["transaction_id"], "approve"),
        _decide(raw, wendy, g2["transaction_id"], "approve"),
    )
    assert sorted(r.body["status"] for r in both) == ["approved", "pending_approval"]
    assert (await _status(raw, req, g2["transaction_id"]))["status"] == "approved"
    await _decide(raw, wendy, txn, "approve")
    assert (await _status(raw, req, txn))["status"] == "approved"
    r = await raw.execute(req, g, "test.two_approvers", params)
    assert r.error is None, r.body
    claims = jwt.decode(r.body["receipt"], options={"verify_signature": False})
    assert sorted(a["by"] for a in claims["approvals"]) == ["victor", "wendy"]


async def test_expiry_counts_as_denial(raw: Raw) -> None:
    req = raw.session("quinn")
    params = {"text": "slow"}
    g = await _pending(raw, req, "test.short_approval", params)  # approval TTL 2 s
    st = await _status(raw, req, g["transaction_id"], wait_s=5)
    assert st["status"] == "expired"
    r = await raw.execute(req, g, "test.short_approval", params)
    assert r.error == "invalid_transaction"
    late = await _decide(raw, raw.session("victor", "approver"), g["transaction_id"], "approve")
    assert late.error == "invalid_transaction"


async def test_escalation_above_threshold(raw: Raw) -> None:
    alice = raw.session("alice", "billing")
    small = {"customer_id": "cus_8f3k2m9q", "amount": 999, "currency": "EUR", "memo": None}
    assert (await raw.authorize(alice, "payments.create_invoice", small)).body["tier"] == "internal"
    big = {**small, "amount": 5000}
    g = await _pending(raw, alice, "payments.create_invoice", big)
    await asyncio.sleep(0.3)
    listed = await raw.request(raw.s.approvals_list, {}, raw.session("victor", "approver"))
    item = next(a for a in listed.body["approvals"] if a["transaction_id"] == g["transaction_id"])
    assert item["escalated"] == "amount above 1000"
    await _decide(raw, raw.session("victor", "approver"), g["transaction_id"], "approve")
    r = await raw.execute(alice, g, "payments.create_invoice", big)
    assert r.error is None, r.body


async def test_status_of_someone_elses_transaction_is_not_revealed(raw: Raw) -> None:
    tess = raw.session("tess-e", "treasury")
    g = await _pending(raw, tess, "payments.send_payment", payment(20))
    r = await raw.request(
        raw.s.status, {"transaction_id": g["transaction_id"]}, raw.session("mallory", "billing")
    )
    assert r.error == "invalid_transaction"


async def test_rate_limit(raw: Raw) -> None:
    sub = raw.session(f"rl-{time.time_ns()}")
    codes = [(await raw.authorize(sub, "test.limited", {"text": "x"})) for _ in range(4)]
    assert [c.error for c in codes] == [None, None, None, "rate_limited"]
    err = codes[-1].body["error"]
    assert err["retryable"] is True and 0 < err["retry_after_s"] <= 5


@pytest.mark.fault
async def test_requests_wait_for_stopped_approval_workers(own_stack: Stack) -> None:
    async with connected(own_stack) as raw:
        own_stack.stop_proc("approval-0")
        grants = []
        for i in range(20):
            tess = raw.session(f"tess-{i}", "treasury")
            grants.append((tess, await _pending(raw, tess, "payments.send_payment", payment(10))))
        await asyncio.sleep(1.0)
        for tess, g in grants[:3]:
            r = await raw.execute(tess, g, "payments.send_payment", payment(10))
            assert r.error == "approval_pending"
        own_stack.start_worker("approval", 0)
        await own_stack.wait_ready({"handshake-approval": 1})
        for tess, g in grants:
            st = await _status(raw, tess, g["transaction_id"], wait_s=15)
            assert st["status"] == "approved", st
            r = await raw.execute(tess, g, "payments.send_payment", payment(10))
            assert r.error is None, r.body


async def test_approver_decisions_are_signed_and_forgeries_refused(raw: Raw) -> None:
    """A bound approver must sign {txn, preview_hash, decision} with their own key; an
    unsigned, forged, replayed or mismatched signature counts for nothing; the signed
    decision is in the audit trail and verifies there."""
    from mcp_handshake.services.core.proofs import decision_signer
    from tests.conftest import AgentKey

    tess = raw.session("tess-sig", "treasury")
    victor = raw.session("victor-sig", "approver")
    params = payment(2600, "acct_zz9911")
    g = await _pending(raw, tess, "payments.send_payment", params)
    txn = g["transaction_id"]
    await asyncio.sleep(0.5)  # the confirmation agent passes it to humans
    listed = await raw.request(raw.s.approvals_list, {}, victor)
    preview_hash = next(a for a in listed.body["approvals"] if a["transaction_id"] == txn)[
        "preview_hash"
    ]
    unsigned = await raw.decide(victor, txn, "approve", sign=False)
    assert unsigned.error == "validation_failed", unsigned.body
    mallory_key = AgentKey()
    for forged in (
        mallory_key.decision(txn, preview_hash, "approve"),  # another key
        raw.key("victor-sig").decision(txn, "sha256:" + "1" * 64, "approve"),  # other preview
        raw.key("victor-sig").decision(txn, preview_hash, "deny"),  # other decision
        "not-a-jws",
    ):
        body = {"transaction_id": txn, "decision": "approve"}
        r = await raw.request(raw.s.approvals_decide, body, victor, {"Handshake-Proof": forged})
        assert r.error == "validation_failed", r.body
    assert (await _status(raw, tess, txn))["status"] == "pending_approval"
    signature = raw.key("victor-sig").decision(txn, preview_hash, "approve")
    body = {"transaction_id": txn, "decision": "approve"}
    ok = await raw.request(raw.s.approvals_decide, body, victor, {"Handshake-Proof": signature})
    assert ok.error is None and ok.body["status"] == "approved", ok.body
    assert decision_signer(signature, txn=txn, preview_hash=preview_hash, decision="approve") == (
        raw.key("victor-sig").thumbprint
    )
    assert decision_signer(signature, txn=txn, preview_hash=preview_hash, decision="deny") is None
    log = raw.stack.home / "audit" / "audit.log"
    deadline = time.monotonic() + 10
    recorded: list[Any] = []
    while not recorded and time.monotonic() < deadline:
        await asyncio.sleep(0.3)
        recorded = [
            line["body"]["event"]
            for line in read_entries(log)  # complete lines only: the writer may be mid-line
            if line["kind"] == "event"
            and line["body"]["event"].get("txn") == txn
            and line["body"]["event"].get("kind") == "approval.decided"
        ]
    assert recorded and recorded[0]["signature"] == signature
    # audit show verifies the signed decision from the log
    argv = [sys.executable, "-m", "mcp_handshake.services.dev.cli", "audit", "show", txn]
    shown = await asyncio.to_thread(
        subprocess.run, argv, env=raw.stack.env(), capture_output=True, text=True, timeout=60
    )
    assert shown.returncode == 0, shown.stdout + shown.stderr
    assert f"signed by key {raw.key('victor-sig').thumbprint} (verified)" in shown.stdout
