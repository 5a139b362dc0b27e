"""What a tier demands of one operation: the effective tier, checks, masks, preview.

Tiers are cumulative (protocol.md): internal adds proof of possession;
confidential adds param checks and result masking; restricted adds approval.
A policy that permits only with approval raises a tool to restricted for the
params it names (e.g. an invoice above 1000).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from mcp_handshake.services.core.checks import run_checks
from mcp_handshake.services.core.masking import apply_masks
from mcp_handshake.services.core.policy import Rules
from mcp_handshake.services.core.tools import Tier, Tool

__all__ = ["TierPlan", "plan"]


@dataclass(frozen=True, slots=True)
class TierPlan:
    tool: Tool
    tier: Tier
    #: Why the tool was escalated to approval, if it was.
    escalated: str | None
    rules: Rules

    @property
    def needs_proof(self) -> bool:
        return self.tier.at_least(Tier.INTERNAL)

    @property
    def needs_approval(self) -> bool:
        return self.tier.at_least(Tier.RESTRICTED)

    def check_params(self, params: Mapping[str, Any]) -> None:
        """Confidential and above: the tool's checks; ``ValidationFailed``. (Policy's
        own conditions on params are Cedar ``forbid`` policies.)"""
        if self.tier.at_least(Tier.CONFIDENTIAL):
            run_checks(params, self.tool.checks)

    def mask_result(self, result: Any) -> Any:
        masks = {**self.tool.mask, **self.rules.mask}
        return apply_masks(result, masks) if masks else result

    def preview(self, params: Mapping[str, Any]) -> Any:
        """What approvers see: the params with the tool's preview masks applied."""
        return apply_masks(dict(params), self.tool.preview_mask)


def plan(tool: Tool, rules: Rules, params: Mapping[str, Any]) -> TierPlan:
    """The tier for these params under the rules policy decided for them."""
    tier = tool.tier
    reason = rules.escalated if rules.verdict == "approval" else None
    if reason is not None and not tier.at_least(Tier.RESTRICTED):
        tier = Tier.RESTRICTED
    return TierPlan(tool, tier, reason, rules)
