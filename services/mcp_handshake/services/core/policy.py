"""What a policy decision is, as the phases use it: the caller, and the rules for one call.

The policy engine (Cedar, :mod:`mcp_handshake.services.policy`) decides; this module
holds only the shapes both sides share, so the tier logic in ``core`` needs no engine.
Anything not permitted is denied.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Annotated, Literal

import msgspec

__all__ = ["Caller", "RateLimit", "Rules", "Verdict"]


@dataclass(frozen=True, slots=True)
class Caller:
    """Who is asking, as established by a verified session JWT."""

    sub: str
    roles: frozenset[str]
    scopes: frozenset[str]
    #: RFC 7638 thumbprint of the key the session is bound to (``cnf.jkt``).
    jkt: str | None = None
    #: The session's ``groups`` claim.
    groups: frozenset[str] = frozenset()


class RateLimit(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """At most ``requests`` authorizations per caller per ``per_s`` seconds."""

    requests: Annotated[int, msgspec.Meta(ge=1)]
    per_s: Annotated[float, msgspec.Meta(gt=0, le=86_400)] = 60.0


#: ``permit``: allowed as the tool's tier says; ``approval``: allowed once approved;
#: ``deny``: refused (no permit, or a forbid).
Verdict = Literal["permit", "approval", "deny"]


@dataclass(frozen=True, slots=True)
class Rules:
    """What policy decided for one call (one caller, tool and set of params, one phase)."""

    tool: str
    verdict: Verdict
    token_ttl_s: float
    approval_ttl_s: float
    approver_roles: frozenset[str]
    quorum: int = 1
    rate_limit: RateLimit | None = None
    #: Why policy sends this call through approval (the permitting policy's reason).
    escalated: str | None = None
    #: Extra result masks (added to the tool's own): path -> rule.
    mask: Mapping[str, str] = field(default_factory=dict)
    #: The ids of the policies that decided (the permits, or the forbids).
    policy_ids: tuple[str, ...] = ()
    #: ``sha256:<hex>`` of the policy set in force.
    policy_hash: str = ""

    @property
    def allowed(self) -> bool:
        return self.verdict != "deny"

    def facts(self) -> dict[str, object]:
        """What the audit trail records of this decision."""
        return {"verdict": self.verdict, "policies": list(self.policy_ids),
                "policy_hash": self.policy_hash}  # fmt: skip
