"""Execute applies the policy in force at execute time, in both directions.

Transactions are authorized under one policy; then the policy file is edited
and the execute worker restarted (a fresh start reads the file), and the same
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


#: (what the policy says, what it says now)
STRICTER = [
    # create_invoice is no longer for billing
    *[('permit (principal, action == Action::"payments.create_invoice", resource)\n'
       'when {\n  principal.roles.contains("billing")',
       'permit (principal, action == Action::"payments.create_invoice", resource)\n'
       'when {\n  principal.roles.contains("treasury")')] * 2,
    # list_invoices (internal) and test.sleep (public) now escalate to approval
    ('@id("invoices.list.billing")',
     '@id("invoices.list.billing.many")\n@approval("limit above 5")\n'
     'permit (principal, action == Action::"payments.list_invoices", resource)\n'
     'when { principal.roles.contains("billing") && context.params.limit > 5 };\n\n'
     '@id("invoices.list.billing")'),
    ('@id("test.sleep")',
     '@id("test.sleep.long")\n@approval("seconds above 0.05")\n'
     'permit (principal, action == Action::"test.sleep", resource)\n'
     'when { context.params.seconds.greaterThan(decimal("0.05")) };\n\n@id("test.sleep")'),
    # get_customer gets a policy mask, and a forbid on all customers but one
    ('@id("customers.get.support")',
     '@id("customers.only-jane")\n'
     'forbid (principal, action == Action::"customers.get_customer", resource)\n'
     'when { context.params.customer_id != "cus_8f3k2m9q" };\n\n'
     '@id("customers.get.support")\n@mask("name=full")'),
]  # fmt: skip


def stricter(policy: str) -> str:
    for old, new in STRICTER:
        assert old in policy, old
        policy = policy.replace(old, new, 1)
    return policy


def lenient(policy: str) -> str:
    """create_invoice no longer escalates large amounts to approval."""
    escalation = '@approval("amount above 1000")\n'
    assert escalation in policy
    return policy.replace(escalation, "")


async def _restart_execute(stack: Stack, policy: str) -> None:
    (stack.home / "policy.cedar").write_text(policy)
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
    original = (stack.home / "policy.cedar").read_text()
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
        # (a forbid that lands after authorize refuses the call and burns the token)
        msg = await _refused_and_burnt(raw, carol, g_max, "customers.get_customer", MAX,
                                       "forbidden")  # fmt: skip
        assert "no longer allows" in msg
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
