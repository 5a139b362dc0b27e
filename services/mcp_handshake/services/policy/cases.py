"""``mcp-handshake policy test CASES``: a table of requests against expected decisions.

A cases file is TOML, one ``[[case]]`` per request::

    [[case]]
    user = "alice"
    roles = ["billing"]                 # also: scopes, groups
    tool = "payments.create_invoice"
    params = { customer_id = "cus_8f3k2m9q", amount = 5000, currency = "EUR" }
    expect = "approval"                 # permit | approval | deny | invalid
    # phase = "execute"; agent = "nats-user"; jkt = "..."; proof = true; quorum = 1

Params are normalized by the tool's schema first, exactly as the phases do
(``invalid`` when they fail it). Users run their own policy in their own CI.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from typing import Any, Literal

import msgspec

from mcp_handshake.services.core.policy import Caller, Rules
from mcp_handshake.services.core.tools import ToolRegistry
from mcp_handshake.services.policy.compiled import PolicyError
from mcp_handshake.services.policy.engine import Policy
from mcp_handshake.services.policy.evaluate import Agent
from mcp_handshake.shared.errors import HandshakeError

__all__ = ["Case", "Outcome", "load_cases", "run_case"]


class Case(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    user: str
    tool: str
    expect: Literal["permit", "approval", "deny", "invalid"]
    roles: list[str] = []
    scopes: list[str] = []
    groups: list[str] = []
    params: dict[str, Any] = {}
    phase: Literal["authorize", "execute"] = "authorize"
    agent: str | None = None
    jkt: str | None = None
    proof: bool = False
    #: Expected approvals needed (checked when given and the verdict is ``approval``).
    quorum: int | None = None
    name: str | None = None


class _File(msgspec.Struct, forbid_unknown_fields=True):
    case: list[Case] = []


@dataclass(frozen=True, slots=True)
class Outcome:
    case: Case
    got: str
    policies: tuple[str, ...]
    quorum: int | None

    @property
    def passed(self) -> bool:
        c = self.case
        return self.got == c.expect and (c.quorum is None or c.quorum == self.quorum)


def load_cases(text: str) -> list[Case]:
    try:
        return msgspec.convert(tomllib.loads(text), _File).case
    except (tomllib.TOMLDecodeError, msgspec.ValidationError) as exc:
        raise PolicyError(f"cases: {exc}") from None


def decide_case(policy: Policy, tools: ToolRegistry, case: Case) -> Rules | None:
    """The decision for one case (``None``: its params fail the tool's schema)."""
    caller = Caller(case.user, frozenset(case.roles), frozenset(case.scopes),
                    jkt=case.jkt, groups=frozenset(case.groups))  # fmt: skip
    tool = tools.find(case.tool)
    if tool is None:
        return policy.decide(caller, case.tool, {}, phase=case.phase)
    try:
        params = tool.normalize(case.params)
        agent = Agent(nats_user=case.agent, jkt=case.jkt, proof=case.proof)
        return policy.decide(caller, tool.name, params, phase=case.phase, agent=agent)
    except HandshakeError:
        return None


def run_case(policy: Policy, tools: ToolRegistry, case: Case) -> Outcome:
    rules = decide_case(policy, tools, case)
    if rules is None:
        return Outcome(case, "invalid", (), None)
    quorum = rules.quorum if rules.verdict == "approval" else None
    return Outcome(case, rules.verdict, rules.policy_ids, quorum)
