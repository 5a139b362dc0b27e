"""The policy's tools without the stack: convert (old TOML to Cedar, same decisions),
reload with the alarm, ``policy test`` cases, and ``policy explain``'s story."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest

from mcp_handshake.services.core.config import PolicyDefaults
from mcp_handshake.services.core.policy import Caller, Rules
from mcp_handshake.services.core.tools import ToolRegistry
from mcp_handshake.services.dev.demo.tools import TOOLS
from mcp_handshake.services.policy import Policy, PolicyError, load_policy
from mcp_handshake.services.policy.cases import load_cases, run_case
from mcp_handshake.services.policy.compiled import compile_policy
from mcp_handshake.services.policy.convert import convert_toml
from mcp_handshake.services.policy.explain import explain
from tests.test_cli import run_cli

ROOT = Path(__file__).resolve().parent.parent
DEMO = (ROOT / "services/mcp_handshake/services/dev/demo/policy.cedar").read_text()
LEGACY = (ROOT / "tests/support/legacy_demo_policy.toml").read_text()
REG = ToolRegistry(TOOLS)
INVOICE = {"customer_id": "cus_8f3k2m9q", "currency": "EUR", "memo": None}

#: One valid params set per tool (create_invoice and list_invoices get several below).
PARAMS: dict[str, list[dict[str, Any]]] = {
    "payments.get_exchange_rate": [{"base": "EUR", "quote": "CHF"}],
    "payments.list_invoices": [{"limit": 1}, {"limit": 100, "status": "open"}],
    "payments.create_invoice": [{**INVOICE, "amount": a}
                                for a in (0.01, 999, 1000, 1000.01, 5000, 75000)],
    "customers.get_customer": [{"customer_id": "cus_8f3k2m9q"}],
    "reports.run_query": [{"expression": "count()"}],
    "payments.send_payment": [{"to_account": "acct_4f9d2a", "amount": 50, "currency": "EUR"},
                              {"to_account": "acct_000000", "amount": 60000, "currency": "EUR"}],
}  # fmt: skip
ROLES = [(), ("billing",), ("treasury",), ("support",), ("analyst",), ("approver",),
         ("billing", "treasury")]  # fmt: skip


def _policy(text: str) -> Policy:
    return Policy(compile_policy(text, TOOLS, PolicyDefaults()), TOOLS)


def _meaning(rules: Rules) -> tuple[Any, ...]:
    r = rules
    return (r.verdict, r.escalated, r.quorum, r.approver_roles, r.token_ttl_s,
            r.approval_ttl_s, r.rate_limit, dict(r.mask))  # fmt: skip


def _cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HANDSHAKE_")}
    return run_cli(*args, env={**env, "HANDSHAKE_HOME": str(tmp_path / "no-home")})


def test_convert_of_the_old_demo_toml_decides_as_the_hand_written_cedar(tmp_path: Path) -> None:
    out = _cli(tmp_path, "policy", "convert", str(ROOT / "tests/support/legacy_demo_policy.toml"))
    assert out.returncode == 0, out.stderr
    converted = _policy(out.stdout)
    written = _policy(DEMO)
    table = [(roles, tool, params) for roles in ROLES for tool, sets in PARAMS.items()
             for params in sets]  # fmt: skip
    assert len(table) >= 50
    verdicts = set()
    for roles, tool, params in table:
        caller = Caller("u", frozenset(roles), frozenset())
        normalized = REG.get(tool).normalize(params)
        a = converted.decide(caller, tool, normalized, phase="authorize")
        b = written.decide(caller, tool, normalized, phase="authorize")
        assert _meaning(a) == _meaning(b), (roles, tool, params)
        verdicts.add(a.verdict)
    assert verdicts == {"permit", "approval", "deny"}
    for tool in PARAMS:
        assert converted.confirmation(tool) == written.confirmation(tool)
    assert converted.confirmation("payments.send_payment") is not None


def test_convert_keeps_scopes_thresholds_order_and_refuses_checks() -> None:
    toml = """
[tools."payments.list_invoices"]
roles = ["billing"]
scopes = ["invoices:read"]
escalate = [{ param = "limit", above = 50 }, { param = "limit", above = 10.5 }]
quorum = 2
"""
    policy = _policy(convert_toml(toml, TOOLS))
    scoped = Caller("bot", frozenset(), frozenset({"invoices:read"}))
    few = policy.decide(scoped, "payments.list_invoices", {"limit": 10, "status": None},
                        phase="authorize")  # fmt: skip
    assert few.verdict == "permit"
    many = policy.decide(scoped, "payments.list_invoices", {"limit": 60, "status": None},
                         phase="authorize")  # fmt: skip
    assert many.escalated == "limit above 50" and many.quorum == 2  # the first crossed
    some = policy.decide(scoped, "payments.list_invoices", {"limit": 11, "status": None},
                         phase="authorize")  # fmt: skip
    assert some.escalated == "limit above 10.5"
    with pytest.raises(PolicyError, match="checks"):
        old = ('[tools."customers.get_customer"]\nroles = ["support"]\n'
               'checks = [{ param = "customer_id", pattern = "cus_x" }]\n')  # fmt: skip
        convert_toml(old, TOOLS)


async def test_a_broken_policy_at_reload_keeps_the_old_set_and_raises_the_alarm(
    tmp_path: Path,
) -> None:
    path = tmp_path / "policy.cedar"
    path.write_text(DEMO)
    policy = load_policy(path, TOOLS, PolicyDefaults(watch_s=0.05))
    good = policy.hash
    watcher = asyncio.ensure_future(policy.watch())
    try:
        await asyncio.sleep(0.1)
        path.write_text(
            DEMO.replace("context.params.amount.lessThan", "context.params.amonut.lessThan")
        )
        os.kill(os.getpid(), signal.SIGHUP)
        await asyncio.sleep(0.3)
        assert policy.hash == good and policy.alarm is not None and "amonut" in policy.alarm
        assert policy.gauges["policy_alarm"] == 1.0
        assert policy.status() == {"hash": good, "policies": 7, "alarm": policy.alarm}
        alice = Caller("alice", frozenset({"billing"}), frozenset())
        invoice = REG.get("payments.create_invoice").normalize({**INVOICE, "amount": 5})
        assert policy.decide(alice, "payments.create_invoice", invoice, phase="execute").allowed
        path.write_text(DEMO + "\n// reviewed\n")  # the file watch picks the fix up
        for _ in range(100):
            if policy.alarm is None:
                break
            await asyncio.sleep(0.05)
        assert policy.alarm is None and policy.hash != good
        assert policy.gauges["policy_alarm"] == 0.0
        longer = DEMO.replace('@quorum("1")', '@quorum("1")\n@approval_ttl_s("3600")')
        path.write_text(longer)  # needs a restart: the audit window was sized at start
        assert not policy.reload() and "restart the workers" in (policy.alarm or "")
    finally:
        watcher.cancel()


def test_policy_validate_and_test_commands(tmp_path: Path) -> None:
    demo = ROOT / "services/mcp_handshake/services/dev/demo"
    config = tmp_path / "handshake.toml"
    config.write_text((demo / "handshake.toml").read_text().replace(
        'policy_file = "policy.cedar"', f'policy_file = "{demo / "policy.cedar"}"'))  # fmt: skip
    ok = _cli(tmp_path, "policy", "validate", "--config", str(config))
    assert ok.returncode == 0 and ok.stdout.startswith("ok: 7 policies, sha256:"), ok.stderr
    cases = tmp_path / "cases.toml"
    cases.write_text("""
[[case]]
name = "large invoice"
user = "alice"
roles = ["billing"]
tool = "payments.create_invoice"
params = { customer_id = "cus_8f3k2m9q", amount = 5000, currency = "EUR" }
expect = "approval"

[[case]]
name = "wrong expectation"
user = "carol"
roles = ["support"]
tool = "payments.create_invoice"
params = { customer_id = "cus_8f3k2m9q", amount = 5, currency = "EUR" }
expect = "permit"
""")
    out = _cli(tmp_path, "policy", "test", str(cases), "--config", str(config))
    assert out.returncode == 1, out.stderr
    assert "ok   large invoice: alice payments.create_invoice -> approval (expected approval; " \
        "by invoices.create.billing.large)" in out.stdout  # fmt: skip
    assert "FAIL wrong expectation: carol payments.create_invoice -> deny" in out.stdout
    assert out.stdout.strip().endswith("1 passed, 1 failed")


def test_policy_test_cases_report_each_decision(tmp_path: Path) -> None:
    cases = load_cases("""
[[case]]
user = "alice"
roles = ["billing"]
tool = "payments.create_invoice"
params = { customer_id = "cus_8f3k2m9q", amount = 5000, currency = "EUR" }
expect = "approval"
quorum = 1

[[case]]
user = "eve"
tool = "payments.list_invoices"
expect = "deny"

[[case]]
user = "alice"
roles = ["billing"]
tool = "payments.list_invoices"
params = { limit = 1000 }
expect = "invalid"

[[case]]
user = "alice"
roles = ["billing"]
tool = "payments.list_invoices"
expect = "deny"
""")
    policy = _policy(DEMO)
    outcomes = [run_case(policy, REG, c) for c in cases]
    assert [o.passed for o in outcomes] == [True, True, True, False]
    assert outcomes[0].policies == ("invoices.create.billing.large",)
    assert outcomes[3].got == "permit"
    with pytest.raises(PolicyError, match="expect"):
        load_cases('[[case]]\nuser = "a"\ntool = "t"\nexpect = "maybe"\n')


def test_explain_tells_the_story_from_audit_events() -> None:
    h = "sha256:" + "ab" * 32
    events = [
        {"kind": "authorize.granted", "outcome": "ok", "at": 1, "verdict": "approval",
         "policies": ["invoices.create.billing.large"], "policy_hash": h},
        {"kind": "approval.decided", "outcome": "ok", "at": 2, "decision": "approve",
         "by": "victor"},
        {"kind": "execute.denied", "outcome": "forbidden", "at": 3, "verdict": "deny",
         "policies": ["freeze"], "policy_hash": h},
    ]  # fmt: skip
    lines = explain(events)
    assert lines[0] == ("authorize.granted (ok): permitted with approval by "
                        f"invoices.create.billing.large; policy set {h}")  # fmt: skip
    assert lines[1] == "approval.decided: approve by victor"
    assert lines[2].startswith("execute.denied (forbidden): refused by freeze")
    assert lines[-1] == "outcome: execute.denied (forbidden)"
    default = explain([{"kind": "authorize.denied", "outcome": "forbidden", "verdict": "deny",
                        "policies": [], "policy_hash": h}])  # fmt: skip
    assert "no policy permits it (default deny)" in default[0]
    assert explain([{"kind": "execute.intent"}]) == []
