"""The confirmation agent: decides restricted transactions before any human.

The interface is one method, so an LLM-backed agent can replace the default
rule-based one (``[approval] agent = "package.module:factory"`` in
``handshake.toml``; the factory gets the policy and the store).

The rule-based agent's logic stays code; its knobs are ``@confirm_*`` annotations
on the tool's permitting Cedar policy (see docs/policy.md for why: velocity needs a
counter the agent keeps, and its three outcomes are not Cedar's two).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Protocol

from mcp_handshake.services.policy import Policy
from mcp_handshake.services.store import Store, TxRecord

__all__ = ["AgentDecision", "ConfirmationAgent", "RuleBasedAgent"]


@dataclass(frozen=True, slots=True)
class AgentDecision:
    action: Literal["approve", "deny", "humans"]
    reason: str


class ConfirmationAgent(Protocol):
    async def decide(self, request: TxRecord) -> AgentDecision: ...


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


class RuleBasedAgent:
    """Amount limits, allow-listed recipients and per-requester velocity, from policy.

    Without rules for a tool it passes every decision to humans.
    """

    def __init__(self, policy: Policy, store: Store) -> None:
        self._policy = policy
        self._store = store

    async def decide(self, request: TxRecord) -> AgentDecision:
        rules = self._policy.confirmation(request.tool)
        if rules is None:
            return AgentDecision("humans", "no confirmation rules for this tool")
        params = request.params or {}
        amount = _number(params.get(rules.amount_param))
        if rules.deny_above is not None and amount is not None and amount > rules.deny_above:
            return AgentDecision("deny", f"{rules.amount_param} above {rules.deny_above:g}")
        if rules.velocity_max is not None:
            n = await self._store.counters.velocity(
                request.sub, request.tool, rules.velocity_window_s
            )
            if n > rules.velocity_max:
                return AgentDecision("deny", "too many requests of this kind from this requester")
        if rules.recipient_param and rules.allowed_recipients:
            recipient = params.get(rules.recipient_param)
            if recipient not in rules.allowed_recipients:
                return AgentDecision("humans", "recipient not on the allow-list")
        if request.escalated and rules.auto_approve_max is None:
            return AgentDecision("humans", f"escalated: {request.escalated}")
        if (
            rules.auto_approve_max is not None
            and amount is not None
            and amount <= rules.auto_approve_max
        ):
            return AgentDecision("approve", f"{rules.amount_param} within the automatic limit")
        return AgentDecision("humans", "needs a human decision")
