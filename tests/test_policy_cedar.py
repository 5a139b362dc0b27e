"""Cedar policy without the stack: schema validation at load, decisions, the partition by
action, the TOML converter, reload, explain and policy tests."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import cedarpy
import pytest

from mcp_handshake.services.core.config import PolicyDefaults
from mcp_handshake.services.core.policy import Caller, Rules
from mcp_handshake.services.core.tools import ToolRegistry
from mcp_handshake.services.dev.demo.tools import TOOLS
from mcp_handshake.services.policy import Agent, Policy, PolicyError
from mcp_handshake.services.policy.compiled import compile_policy
from mcp_handshake.services.policy.schema import cedar_schema
from mcp_handshake.shared.errors import InvalidParams

ROOT = Path(__file__).resolve().parent.parent
DEMO = (ROOT / "services/mcp_handshake/services/dev/demo/policy.cedar").read_text()
LEGACY = (ROOT / "tests/support/legacy_demo_policy.toml").read_text()
TOOLS_REG = ToolRegistry(TOOLS)
INVOICE = {"customer_id": "cus_8f3k2m9q", "amount": 12.5, "currency": "EUR", "memo": None}


def policy_of(text: str) -> Policy:
    return Policy(compile_policy(text, TOOLS, PolicyDefaults()), TOOLS)


def who(sub: str, *roles: str) -> Caller:
    return Caller(sub, frozenset(roles), frozenset())


def decide(policy: Policy, caller: Caller, tool: str, params: dict[str, Any], **kw: Any) -> Rules:
    return policy.decide(caller, tool, TOOLS_REG.get(tool).normalize(params),
                         phase=kw.pop("phase", "authorize"), **kw)  # fmt: skip


def test_a_typo_in_a_param_name_stops_the_load_naming_the_policy_and_line() -> None:
    typo = DEMO.replace("context.params.amount.greaterThan", "context.params.amonut.greaterThan")
    with pytest.raises(PolicyError) as info:
        compile_policy(typo, TOOLS, PolicyDefaults(), "policy.cedar")
    message = str(info.value)
    line = typo.splitlines().index('@approval("amount above 1000")') + 2  # the permit line
    assert message.startswith(f"policy.cedar: policy 'invoices.create.billing.large' (line {line}")
    assert "amonut" in message and len(message.splitlines()) == 1


@pytest.mark.parametrize(
    ("condition", "found"),
    [
        ('context.params.currency == 5', "Long and String"),  # a string compared with a number
        ('context.params.amount > 5', "decimal"),  # a number param is a decimal, not a Long
        ('context.params.memo == "x"', "memo"),  # optional: needs `has`
        ('principal.team == "x"', "team"),  # no such principal attribute
    ],
)  # fmt: skip
def test_ill_typed_policies_stop_the_load(condition: str, found: str) -> None:
    text = f'permit (principal, action == Action::"payments.create_invoice", resource)\n' \
           f"when {{ {condition} }};\n"  # fmt: skip
    with pytest.raises(PolicyError, match=found):
        compile_policy(text, TOOLS, PolicyDefaults())


@pytest.mark.parametrize(
    ("text", "found"),
    [
        ('permit (principal, action == Action::"payments.nope", resource);', "nope"),
        ('@quorum("many")\npermit (principal, action, resource);', "quorum"),
        ('@colour("red")\npermit (principal, action, resource);', "unknown annotation @colour"),
        ('@approval("x")\nforbid (principal, action, resource);', "forbid"),
        ('@id("a")\npermit (principal, action, resource);\n'
         '@id("a")\nforbid (principal, action, resource);', "twice"),
        ("permit (principal, action, resource) when {", "does not parse"),
        ("permit (principal == ?principal, action, resource);", "templates"),
    ],
)  # fmt: skip
def test_bad_policies_stop_the_load(text: str, found: str) -> None:
    with pytest.raises(PolicyError, match=found):
        compile_policy(text, TOOLS, PolicyDefaults())


def test_the_schema_types_every_tool_param_and_groups_actions() -> None:
    actions = cedar_schema(TOOLS)[""]["actions"]
    invoice = actions["payments.create_invoice"]
    params = invoice["appliesTo"]["context"]["attributes"]["params"]["attributes"]
    assert params["amount"] == {"type": "Extension", "name": "decimal"}
    assert params["currency"] == {"type": "String"}
    assert params["memo"] == {"type": "String", "required": False}
    assert {"id": "tier:internal"} in invoice["memberOf"]
    assert {"id": "target:payments"} in invoice["memberOf"]
    limit = actions["payments.list_invoices"]["appliesTo"]["context"]["attributes"]["params"]
    assert limit["attributes"]["limit"] == {"type": "Long"}


def test_escalation_quorum_and_ttls_come_from_the_permitting_policy() -> None:
    text = DEMO.replace(
        '@approval("amount above 1000")',
        '@approval("amount above 1000")\n@quorum("2")\n@approval_ttl_s("60")',
    )
    policy = policy_of(text)
    alice = who("alice", "billing")
    small = decide(policy, alice, "payments.create_invoice", INVOICE)
    assert small.verdict == "permit" and small.policy_ids == ("invoices.create.billing",)
    big = decide(policy, alice, "payments.create_invoice", {**INVOICE, "amount": 1000.01})
    assert big.verdict == "approval" and big.escalated == "amount above 1000"
    assert big.quorum == 2 and big.approval_ttl_s == 60
    assert big.policy_ids == ("invoices.create.billing.large",)


def test_another_users_role_does_not_satisfy_a_policy() -> None:
    policy = policy_of(DEMO)
    assert decide(policy, who("alice", "billing"), "payments.list_invoices", {}).allowed
    for other in (who("carol", "support"), who("billing"), who("tess", "treasury")):
        rules = decide(policy, other, "payments.list_invoices", {})
        assert rules.verdict == "deny" and rules.policy_ids == ()


def test_a_forbid_wins_and_excludes_an_agent_identity() -> None:
    policy = policy_of(DEMO + '\n@id("no-rogue")\nforbid (principal, action, resource)\n'
                       "when { context.agent has nats_user &&\n"
                       '       context.agent.nats_user == "rogue" };')  # fmt: skip
    alice = who("alice", "billing")
    rogue = decide(policy, alice, "payments.list_invoices", {}, agent=Agent(nats_user="rogue"))
    assert rogue.verdict == "deny" and rogue.policy_ids == ("no-rogue",)
    good = decide(policy, alice, "payments.list_invoices", {}, agent=Agent(nats_user="agent"))
    assert good.verdict == "permit"


def test_policy_reads_tier_phase_proof_key_and_time() -> None:
    text = (
        DEMO
        + """
@id("execute-needs-proof")
forbid (principal, action in Action::"tier:internal", resource)
when { context.phase == "execute" && !context.proof };
@id("key-pinned")
forbid (principal, action == Action::"payments.list_invoices", resource)
when { context.agent has jkt && context.agent.jkt != "good-key" };
@id("not-at-25h")
forbid (principal, action, resource) when { context.time.hour > 24 };
"""
    )
    policy, alice = policy_of(text), who("alice", "billing")
    assert decide(policy, alice, "payments.list_invoices", {}).allowed
    refused = decide(policy, alice, "payments.list_invoices", {}, phase="execute")
    assert refused.policy_ids == ("execute-needs-proof",)
    proven = Agent(jkt="good-key", proof=True)
    assert decide(
        policy, alice, "payments.list_invoices", {}, phase="execute", agent=proven
    ).allowed
    other_key = Agent(jkt="other", proof=True)
    assert not decide(policy, alice, "payments.list_invoices", {}, agent=other_key).allowed


def test_values_policy_cannot_compare_exactly_are_invalid_params() -> None:
    policy = policy_of(DEMO)
    alice = who("alice", "billing")
    with pytest.raises(InvalidParams, match="amount"):
        policy.decide(alice, "payments.create_invoice", {**INVOICE, "amount": 1000.00001},
                      phase="authorize")  # fmt: skip


#: A set that uses every form of action scope, to check the partition against Cedar itself.
MIXED = (
    DEMO
    + """
@id("no-restricted-for-interns")
forbid (principal, action in Action::"tier:restricted", resource)
when { principal.groups.contains("interns") };
@id("payments-target-for-auditors")
permit (principal, action in [Action::"target:payments", Action::"reports.run_query"], resource)
when { principal.roles.contains("auditor") };
@id("nobody-at-all")
forbid (principal, action, resource) when { principal.roles.contains("banned") };
"""
)


def test_the_partition_by_action_decides_as_the_whole_set_does() -> None:
    policy = policy_of(MIXED)
    whole = cedarpy.PolicySet.from_str(MIXED)
    roles = ["billing", "treasury", "auditor", "banned", "support", "analyst"]
    samples = {"payments.create_invoice": INVOICE, "payments.list_invoices": {},
               "payments.send_payment": {"to_account": "acct_4f9d2a", "amount": 5,
                                         "currency": "EUR"},
               "payments.get_exchange_rate": {"base": "EUR", "quote": "CHF"},
               "reports.run_query": {"expression": "count()"},
               "customers.get_customer": {"customer_id": "cus_8f3k2m9q"}}  # fmt: skip
    checked = 0
    for tool, params in samples.items():
        for n in range(3):
            for role_set in itertools.combinations(roles, n):
                groups = frozenset({"interns"}) if len(role_set) == 1 else frozenset()
                caller = Caller("u", frozenset(role_set), frozenset(), groups=groups)
                mine = decide(policy, caller, tool, params)
                theirs = _whole_set_decision(policy, whole, caller, tool, params)
                assert mine.allowed == theirs[0] and set(mine.policy_ids) == theirs[1], (
                    tool,
                    caller,
                )
                checked += 1
    assert checked > 100


def _whole_set_decision(
    policy: Policy, whole: cedarpy.PolicySet, caller: Caller, tool: str, params: dict[str, Any]
) -> tuple[bool, set[str]]:
    from mcp_handshake.services.policy.evaluate import _context
    from mcp_handshake.services.policy.prepared import view

    action = policy.current.actions[tool]
    context = _context(action, TOOLS_REG.get(tool).normalize(params), "authorize", Agent())
    request = {"principal": {"type": "User", "id": caller.sub},
               "action": {"type": "Action", "id": tool},
               "resource": {"type": "Target", "id": "payments"}, "context": context}  # fmt: skip
    result = cedarpy.is_authorized(request, whole, view(policy.current, caller).entities)
    ids = result.diagnostics.id_annotations_by_reason
    return result.allowed, {ids.get(r, r) for r in result.diagnostics.reasons}
