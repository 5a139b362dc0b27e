"""What a permitting policy demands beyond "yes": its annotations.

Cedar answers permit or deny; what a permit comes with is declared on the
permitting policy, so it is reviewed where the permit is:

| annotation | meaning |
|---|---|
| ``@id("name")`` | the policy's id in decisions, audit and ``policy explain`` |
| ``@approval("reason")`` | permit only with approval (a lower tier becomes restricted) |
| ``@quorum("2")`` | distinct approvers needed |
| ``@approver_roles("approver ops")`` | who may approve (space-separated roles) |
| ``@approval_ttl_s("600")`` | how long approval may take; expiry counts as denial |
| ``@token_ttl_s("30")`` | lifetime of the granted token |
| ``@rate_limit("60/60")`` | at most 60 authorizations per caller per 60 seconds |
| ``@mask("name=full card=last4")`` | extra result masks (path=rule) |
| ``@confirm_*`` | the rule-based confirmation agent's knobs (:class:`ConfirmationRules`) |

When several permits decide one call, the strictest wins: approval if any asks
for it, the largest quorum, the shortest TTLs and rate limit, every mask. The
approver roles are all those the deciding permits name (any of them may
approve). ``forbid`` policies take no annotations but ``@id``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import msgspec

from mcp_handshake.services.core.policy import RateLimit

__all__ = ["ConfirmationRules", "Effects", "effects_of"]

KNOWN = {"id", "approval", "quorum", "approver_roles", "approval_ttl_s", "token_ttl_s",
         "rate_limit", "mask"}  # fmt: skip
CONFIRM = "confirm_"


class ConfirmationRules(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """The rule-based confirmation agent's knobs (annotations ``@confirm_<field>``).

    Deny above ``deny_above`` or past the velocity limit; approve at or below
    ``auto_approve_max`` when the recipient (if an allow-list is set) is on it;
    otherwise pass the decision to human approvers.
    """

    amount_param: str = "amount"
    auto_approve_max: float | None = None
    deny_above: float | None = None
    recipient_param: str | None = None
    #: Space-separated in the annotation.
    allowed_recipients: frozenset[str] = frozenset()
    #: Most restricted requests per requester per window before denial.
    velocity_max: int | None = None
    velocity_window_s: float = 3600.0


@dataclass(frozen=True, slots=True)
class Effects:
    """One policy's annotations, checked once at load."""

    approval: str | None = None
    quorum: int | None = None
    approver_roles: frozenset[str] = frozenset()
    approval_ttl_s: float | None = None
    token_ttl_s: float | None = None
    rate_limit: RateLimit | None = None
    mask: Mapping[str, str] = field(default_factory=dict)
    confirmation: ConfirmationRules | None = None


def _number(name: str, value: str, low: float, high: float) -> float:
    try:
        n = float(value)
    except ValueError:
        raise ValueError(f"@{name}({value!r}) is not a number") from None
    if not low < n <= high:
        raise ValueError(f"@{name}({value!r}) must be above {low:g} and at most {high:g}")
    return n


def _rate(value: str) -> RateLimit:
    requests, _, per = value.partition("/")
    try:
        return RateLimit(requests=int(requests), per_s=float(per or 60))
    except ValueError:
        raise ValueError(f'@rate_limit({value!r}) must read "<requests>/<seconds>"') from None


def _mask(value: str) -> dict[str, str]:
    pairs = [p.partition("=") for p in value.split()]
    if any(not k or not rule for k, _, rule in pairs):
        raise ValueError(f'@mask({value!r}) must read "path=rule path=rule"')
    return {k: rule for k, _, rule in pairs}


def _confirmation(notes: Mapping[str, str]) -> ConfirmationRules | None:
    raw: dict[str, object] = {
        k.removeprefix(CONFIRM): v for k, v in notes.items() if k.startswith(CONFIRM)
    }
    if not raw:
        return None
    if "allowed_recipients" in raw:
        raw["allowed_recipients"] = str(raw["allowed_recipients"]).split()
    try:
        return msgspec.convert(raw, ConfirmationRules, strict=False)
    except msgspec.ValidationError as exc:
        raise ValueError(f"@{CONFIRM}*: {exc}") from None


def effects_of(notes: Mapping[str, str], effect: str) -> Effects:
    """The effects of one policy's annotations; ``ValueError`` names a bad one."""
    unknown = sorted(k for k in notes if k not in KNOWN and not k.startswith(CONFIRM))
    if unknown:
        raise ValueError(f"unknown annotation @{unknown[0]}")
    if effect == "forbid" and set(notes) - {"id"}:
        raise ValueError("a forbid policy takes no annotation but @id")
    quorum = notes.get("quorum")
    ttl, token = notes.get("approval_ttl_s"), notes.get("token_ttl_s")
    rate = notes.get("rate_limit")
    return Effects(
        approval=notes.get("approval"),
        quorum=int(_number("quorum", quorum, 0, 10)) if quorum is not None else None,
        approver_roles=frozenset(notes.get("approver_roles", "").split()),
        approval_ttl_s=_number("approval_ttl_s", ttl, 0, 86_400) if ttl is not None else None,
        token_ttl_s=_number("token_ttl_s", token, 0, 600) if token is not None else None,
        rate_limit=_rate(rate) if rate is not None else None,
        mask=_mask(notes["mask"]) if "mask" in notes else {},
        confirmation=_confirmation(notes),
    )
