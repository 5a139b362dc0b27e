"""The confirmation agent: decides restricted transactions before any human.

The interface is one method, so an LLM-backed agent can replace the default
rule-based one (``[approval] agent = "package.module:factory"`` in
``handshake.toml``; the factory gets the policy and the token store).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Protocol

from mcp_handshake.services.core.policy import Policy
from mcp_handshake.services.store.tokens import ApprovalRecord, TokenStore

__all__ = ["AgentDecision", "ConfirmationAgent", "RuleBasedAgent"]


@dataclass(frozen=True, slots=True)
class AgentDecision:
    action: Literal["approve", "deny", "humans"]
    reason: str


class ConfirmationAgent(Protocol):
    async def decide(self, request: ApprovalRecord) -> AgentDecision: ...


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


class RuleBasedAgent:
    """Amount limits, allow-listed recipients and per-requester velocity, from policy.

    Without rules for a tool it passes every decision to humans.
    """

    def __init__(self, policy: Policy, store: TokenStore) -> None:
        self._policy = policy
        self._store = store

    async def decide(self, request: ApprovalRecord) -> AgentDecision:
        tool_rule = self._policy.for_tool(request.tool)
        rules = tool_rule.confirmation if tool_rule else None
        if rules is None:
            return AgentDecision("humans", "no confirmation rules for this tool")
        amount = _number(request.params.get(rules.amount_param))
        if rules.deny_above is not None and amount is not None and amount > rules.deny_above:
            return AgentDecision("deny", f"{rules.amount_param} above {rules.deny_above:g}")
        if rules.velocity_max is not None:
            key = f"handshake:velocity:{{{request.sub}}}:{request.tool}"
            n, _ = await self._store.count(key, rules.velocity_window_s)
            if n > rules.velocity_max:
                return AgentDecision("deny", "too many requests of this kind from this requester")
        if rules.recipient_param and rules.allowed_recipients:
            recipient = request.params.get(rules.recipient_param)
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
