"""Execute applies the policy in force at execute time, in both directions.

Transactions are authorized under one policy; then the policy file is edited
and the execute worker restarted (policy is loaded at start), and the same
transactions are executed under the new one.
"""

from __future__ import annotations

from typing import Any

import jwt

from mcp_handshake.services.dev.devstack import Stack
from tests.conftest import Raw, connected

INVOICE = {"customer_id": "cus_8f3k2m9q", "amount": 12.5, "currency": "EUR", "memo": None}
BIG_INVOICE = {**INVOICE, "amount": 5000}
LIST = {"status": None, "limit": 20}
SLEEP = {"seconds": 0.1}
JANE = {"customer_id": "cus_8f3k2m9q"}
MAX = {"customer_id": "cus_a1b2c3d4"}


#: (tool, its policy entry's first line, what it becomes)
STRICTER = [
    # create_invoice is no longer for billing
    ("payments.create_invoice", 'roles = ["billing"]', 'roles = ["treasury"]'),
    # list_invoices (internal) and test.sleep (public) now escalate to approval
    ("payments.list_invoices", 'roles = ["billing"]',
     'roles = ["billing"]\nescalate = [{ param = "limit", above = 5 }]'),
    ("test.sleep", 'roles = ["*"]',
     'roles = ["*"]\nescalate = [{ param = "seconds", above = 0.05 }]'),
    # get_customer gets a policy mask and a policy check
    ("customers.get_customer", 'roles = ["support"]',
     'roles = ["support"]\nmask = { name = "full" }\n'
     'checks = [{ param = "customer_id", pattern = "cus_8f3k2m9q" }]'),
]  # fmt: skip


def stricter(policy: str) -> str:
    for tool, old, new in STRICTER:
        head = f'[tools."{tool}"]\n'
        assert head + old + "\n" in policy, tool
        policy = policy.replace(head + old + "\n", head + new + "\n")
    return policy


def lenient(policy: str) -> str:
    """create_invoice no longer escalates large amounts to approval."""
    head = '[tools."payments.create_invoice"]\nroles = ["billing"]\n'
    escalation = 'escalate = [{ param = "amount", above = 1000 }]\n'
    assert head + escalation in policy
    return policy.replace(head + escalation, head)


async def _restart_execute(stack: Stack, policy: str) -> None:
    (stack.home / "policy.toml").write_text(policy)
    stack.stop_proc("execute-0")
    stack.start_worker("execute", 0)
    await stack.wait_ready({"handshake-execute": 1})


async def _grant(raw: Raw, session: str, tool: str, params: dict[str, Any]) -> dict[str, Any]:
    r = await raw.authorize(session, tool, params)
    assert r.error is None, r.body
    return r.body


async def _status(raw: Raw, session: str, txn: str) -> str:
    r = await raw.request(raw.s.status, {"transaction_id": txn}, session)
    assert r.error is None, r.body
    status: str = r.body["status"]
    return status


async def _refused_and_burnt(
    raw: Raw, session: str, g: dict[str, Any], tool: str, params: Any, code: str,
    again_code: str = "invalid_transaction",
) -> str:  # fmt: skip
    r = await raw.execute(session, g, tool, params)
    assert r.error == code, r.body
    assert r.body["error"]["transaction_id"] == g["transaction_id"]
    assert await _status(raw, session, g["transaction_id"]) == "invalidated"
    again = await raw.execute(session, g, tool, params)
    assert again.error == again_code, "a refused execute must burn the token"
    message: str = r.body["error"]["message"]
    return message


async def test_execute_applies_the_policy_in_force_in_both_directions(own_stack: Stack) -> None:
    stack = own_stack
    original = (stack.home / "policy.toml").read_text()
    async with connected(stack) as raw:
        alice = raw.session("alice", "billing")
        carol = raw.session("carol", "support")
        victor = raw.session("victor", "approver")
        g_forbidden = await _grant(raw, alice, "payments.create_invoice", INVOICE)
        g_restricted = await _grant(raw, alice, "payments.list_invoices", LIST)
        g_proof = await _grant(raw, alice, "test.sleep", SLEEP)
        assert g_proof["tier"] == "public" and g_restricted["tier"] == "internal"
        g_jane = await _grant(raw, carol, "customers.get_customer", JANE)
        g_max = await _grant(raw, carol, "customers.get_customer", MAX)
        g_jane_later = await _grant(raw, carol, "customers.get_customer", JANE)
        g_approved = await _grant(raw, alice, "payments.create_invoice", BIG_INVOICE)
        g_pending = await _grant(raw, alice, "payments.create_invoice", BIG_INVOICE)
        assert g_approved["tier"] == "restricted" and g_pending["status"] == "pending_approval"
        decided = await raw.decide(victor, g_approved["transaction_id"], "approve")
        assert decided.error is None and decided.body["status"] == "approved", decided.body

        # Stricter: refused, burnt, and nothing reaches the target.
        await _restart_execute(stack, stricter(original))
        before = await raw.target_stats()
        msg = await _refused_and_burnt(
            raw, alice, g_forbidden, "payments.create_invoice", INVOICE, "forbidden"
        )
        assert "no longer allows" in msg
        msg = await _refused_and_burnt(
            raw, alice, g_restricted, "payments.list_invoices", LIST, "forbidden"
        )
        assert "requires approval" in msg
        await _refused_and_burnt(raw, alice, g_proof, "test.sleep", SLEEP, "validation_failed")
        # (param checks refuse before the token is looked at, every time)
        await _refused_and_burnt(raw, carol, g_max, "customers.get_customer", MAX,
                                 "validation_failed", again_code="validation_failed")  # fmt: skip
        after = await raw.target_stats()
        assert after["calls"] == before["calls"]
        assert after["side_effects"] == before["side_effects"]
        masked = await raw.execute(carol, g_jane, "customers.get_customer", JANE)
        assert masked.error is None, masked.body
        assert masked.body["result"]["name"] != "Jane Doe"  # the policy's new mask

        # More lenient: the tier and masks are the current policy's, not authorize's.
        await _restart_execute(stack, lenient(original))
        done = await raw.execute(alice, g_approved, "payments.create_invoice", BIG_INVOICE)
        assert done.error is None, done.body
        assert done.body["tier"] == "internal"
        claims = jwt.decode(done.body["receipt"], options={"verify_signature": False})
        assert claims["tier"] == "internal"
        assert [a["by"] for a in claims["approvals"]] == ["victor"]
        plain = await raw.execute(carol, g_jane_later, "customers.get_customer", JANE)
        assert plain.error is None, plain.body
        assert plain.body["result"]["name"] == "Jane Doe"
        assert plain.body["result"]["card_number"] != "4242424242424242"  # the tool's own mask
        # A transaction already waiting for approval stays so (documented).
        waiting = await raw.execute(alice, g_pending, "payments.create_invoice", BIG_INVOICE)
        assert waiting.error == "approval_pending", waiting.body
