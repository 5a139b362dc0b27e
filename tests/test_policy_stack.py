"""Cedar policy against the real stack: escalation with the policy's quorum, a forbid that
lands between approval and execute, roles and agent identities, a bad policy at start and
at reload, and ``policy explain`` from the audit log."""

from __future__ import annotations

import asyncio
import hashlib
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nats
import pytest

from mcp_handshake.services.dev.devstack import Stack, StackSpec
from mcp_handshake.services.dev.permissions import OPERATOR
from mcp_handshake.services.runtime.service import discover
from tests.conftest import Raw, connected, engine_stack
from tests.test_batch import authorize_many, code
from tests.test_cli import cli

INVOICE = {"customer_id": "cus_8f3k2m9q", "amount": 12.5, "currency": "EUR", "memo": None}
BIG = {**INVOICE, "amount": 5000}
RATE = {"base": "EUR", "quote": "CHF"}
FREEZE = """
@id("freeze-large-invoices")
forbid (principal, action == Action::"payments.create_invoice", resource)
when { context.params.amount.greaterThan(decimal("1000.0")) };
"""
NO_ROGUE = """
@id("no-rogue-agent")
forbid (principal, action, resource)
when { context.agent has nats_user && context.agent.nats_user == "rogue" };
"""


@pytest.fixture(scope="module")
def pstack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    spec = StackSpec(authorize=1, execute=1, executor=1, approval=1)
    with engine_stack(tmp_path_factory.mktemp("policy"), spec, engines="") as (st, _):
        yield st


@pytest.fixture
def original(pstack: Stack) -> Iterator[str]:
    text = (pstack.home / "policy.cedar").read_text()
    yield text
    asyncio.run(push(pstack, text))


def _hash(text: str) -> str:
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


async def policy_status(stack: Stack) -> list[dict[str, Any]]:
    """Every worker's policy status (``$SRV.STATS`` data), as ``status`` reads it."""
    nc = await nats.connect(**stack.connect_options(OPERATOR))
    try:
        stats = await discover(nc, "STATS", 0.4)
    finally:
        await nc.close()
    return [s["data"]["policy"] for s in stats if "policy" in (s.get("data") or {})]


async def push(stack: Stack, text: str, *, expect_hash: str | None = None) -> None:
    """Write the policy file, SIGHUP the workers, and wait until each has ``expect_hash``
    in force (the new text's by default)."""
    (stack.home / "policy.cedar").write_text(text)
    want = expect_hash or _hash(text)
    deadline = time.monotonic() + 15
    while True:
        for proc in stack.procs:
            if proc.name.split("-")[0] in {"authorize", "execute", "approval", "audit",
                                           "executor"}:  # fmt: skip
                proc.popen.send_signal(signal.SIGHUP)
        await asyncio.sleep(0.3)
        found = await policy_status(stack)
        if len(found) >= 4 and all(p["hash"] == want for p in found):
            return
        assert time.monotonic() < deadline, found


async def _explain(stack: Stack, txn: str, wants: str) -> str:
    """``policy explain TXN`` once the audit log holds the event that ``wants``."""
    deadline = time.monotonic() + 15
    while True:
        out = cli(stack, "policy", "explain", txn)
        if wants in out.stdout or time.monotonic() > deadline:
            return out.stdout
        await asyncio.sleep(0.3)


async def _approved(raw: Raw, session: str) -> dict[str, Any]:
    g = await raw.authorize(session, "payments.create_invoice", BIG)
    assert g.error is None and g.body["status"] == "pending_approval", g.body
    victor = raw.session("victor", "approver")
    await asyncio.sleep(0.2)
    decided = await raw.decide(victor, g.body["transaction_id"], "approve")
    assert decided.error is None and decided.body["status"] == "approved", decided.body
    return g.body


async def test_an_amount_above_the_threshold_escalates_with_the_policys_quorum(
    pstack: Stack, original: str
) -> None:
    escalation = '@approval("amount above 1000")'
    await push(pstack, original.replace(escalation, escalation + '\n@quorum("2")'))
    async with connected(pstack) as raw:
        alice = raw.session("alice", "billing")
        small = await raw.authorize(alice, "payments.create_invoice", INVOICE)
        assert small.error is None and small.body["status"] == "granted"
        g = await raw.authorize(alice, "payments.create_invoice", BIG)
        assert g.body["status"] == "pending_approval" and g.body["escalated"] == "amount above 1000"
        await asyncio.sleep(0.3)
        listed = await raw.request(raw.s.approvals_list, {}, raw.session("victor", "approver"))
        item = next(a for a in listed.body["approvals"]
                    if a["transaction_id"] == g.body["transaction_id"])  # fmt: skip
        assert item["quorum"] == 2
        one = await raw.decide(raw.session("victor", "approver"), item["transaction_id"], "approve")
        assert one.body["status"] == "pending_approval"  # one approver is not enough
    story = await _explain(pstack, g.body["transaction_id"], "invoices.create.billing.large")
    assert ("authorize.granted (ok): permitted with approval by invoices.create.billing.large; "
            f"policy set {_hash((pstack.home / 'policy.cedar').read_text())}") in story  # fmt: skip


async def test_a_forbid_between_approval_and_execute_refuses_the_call(
    pstack: Stack, original: str
) -> None:
    async with connected(pstack) as raw:
        alice = raw.session("alice", "billing")
        g = await _approved(raw, alice)
        granted = await raw.authorize(alice, "payments.create_invoice", INVOICE)
        await push(pstack, original + FREEZE)
        before = await raw.target_stats()
        r = await raw.execute(alice, g, "payments.create_invoice", BIG)
        assert r.error == "forbidden" and "no longer allows" in r.body["error"]["message"]
        assert (await raw.execute(alice, g, "payments.create_invoice", BIG)).error == (
            "invalid_transaction"
        )  # burnt
        assert (await raw.target_stats())["calls"] == before["calls"]
        ok = await raw.execute(alice, granted.body, "payments.create_invoice", INVOICE)
        assert ok.error is None, ok.body  # the forbid names large invoices only
    txn = g["transaction_id"]
    story = await _explain(pstack, txn, "freeze-large-invoices")
    assert "permitted with approval by invoices.create.billing.large" in story
    assert "approval.decided: approve by victor" in story
    assert "execute.denied (forbidden): refused by freeze-large-invoices" in story
    story = await _explain(pstack, granted.body["transaction_id"], "execute.succeeded")
    assert "authorize.granted (ok): permitted by invoices.create.billing; policy set" in story
    assert "execute.succeeded (ok): permitted by invoices.create.billing" in story


async def test_another_users_role_does_not_satisfy_a_policy(pstack: Stack) -> None:
    async with connected(pstack) as raw:
        for sub, role in (("carol", "support"), ("tess", "treasury"), ("victor", "approver")):
            r = await raw.authorize(raw.session(sub, role), "payments.create_invoice", INVOICE)
            assert r.error == "forbidden", (sub, r.body)
        refused = r.body["error"]["transaction_id"]
    story = await _explain(pstack, refused, "authorize.denied")
    assert "authorize.denied (forbidden): refused: no policy permits it (default deny)" in story


async def test_an_agent_identity_a_policy_excludes_is_refused(pstack: Stack, original: str) -> None:
    pstack.add_agent("rogue")
    await push(pstack, original + NO_ROGUE)
    async with connected(pstack) as good, connected(pstack, "rogue") as rogue:
        session = good.session("alice", "billing")
        assert (await good.authorize(session, "payments.get_exchange_rate", RATE)).error is None
        r = await rogue.authorize(session, "payments.get_exchange_rate", RATE)  # same user
        assert r.error == "forbidden", r.body
        # Inside a batch each operation is the same agent's: refused alike.
        batch = await authorize_many(rogue, session, [("payments.get_exchange_rate", RATE)] * 2)
        assert [code(o) for o in batch] == ["forbidden"] * 2, batch
    story = await _explain(pstack, r.body["error"]["transaction_id"], "no-rogue-agent")
    assert "authorize.denied (forbidden): refused by no-rogue-agent" in story


async def test_a_broken_policy_at_reload_keeps_the_old_set_and_raises_the_alarm(
    pstack: Stack, original: str
) -> None:
    good = _hash(original)
    broken = original.replace("params.amount.greaterThan", "params.amonut.greaterThan")
    await push(pstack, broken, expect_hash=good)
    found = await policy_status(pstack)
    assert found and all(p["hash"] == good and "amonut" in (p["alarm"] or "") for p in found)
    status = cli(pstack, "status", "--once")
    assert "POLICY RELOAD REFUSED" in status.stdout and "amonut" in status.stdout, status.stdout
    async with connected(pstack) as raw:  # the old set still decides
        g = await raw.authorize(raw.session("alice", "billing"), "payments.create_invoice", BIG)
        assert g.body["status"] == "pending_approval"
    await push(pstack, original)
    assert all(p["alarm"] is None for p in await policy_status(pstack))


def test_a_typo_in_a_param_name_stops_the_start_with_one_clear_line(
    pstack: Stack, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "handshake.toml").write_text((pstack.home / "handshake.toml").read_text())
    for name in ("keys", "secrets"):
        (home / name).symlink_to(pstack.home / name)
    original = (pstack.home / "policy.cedar").read_text()
    (home / "policy.cedar").write_text(original.replace("params.amount.lessThan",
                                                        "params.amonut.lessThan"))  # fmt: skip
    env = {**pstack.env("authorize"), "HANDSHAKE_HOME": str(home),
           "HANDSHAKE_CONFIG": str(home / "handshake.toml")}  # fmt: skip
    out = subprocess.run([sys.executable, "-m", "mcp_handshake.services.dev.cli", "worker",
                          "authorize"], env={**env, "PYTHONPATH": str(Path.cwd())},
                         capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert out.returncode == 2, out.stderr
    last = out.stderr.strip().splitlines()[-1]
    assert "Traceback" not in out.stderr, out.stderr
    assert last.startswith("invalid_policy: ") and "'invoices.create.billing' (line " in last
    assert "amonut" in last
    check = cli(pstack, "policy", "validate", str(home / "policy.cedar"))
    assert check.returncode == 1 and "amonut" in check.stderr
    assert cli(pstack, "policy", "validate").returncode == 0  # the stack's own file
