"""Policy as data: who may use which tool, with which limits.

Loaded from a TOML file; changing who may do what needs no code change.
Anything not granted is denied: a tool with no entry is usable by nobody.

```toml
[defaults]
token_ttl_s = 30
max_inflight_per_caller = 256  # one caller's requests in flight per endpoint and worker

[tools."payments.create_invoice"]
roles = ["billing"]          # "*" = any signed-in user
scopes = ["payments:write"]  # alternatively, any of these OAuth scopes
```

``max_inflight_per_caller`` (default 256) is backpressure, not a quota: a caller
with that many requests still running on one endpoint of one worker process
gets ``rate_limited`` (retryable, with ``retry_after_s``) for the next one,
and every other caller is served as usual.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import msgspec

from mcp_handshake.services.core.checks import ParamCheck

__all__ = ["Caller", "Policy", "Rules", "ToolPolicy", "load_policy"]


@dataclass(frozen=True, slots=True)
class Caller:
    """Who is asking, as established by a verified session JWT."""

    sub: str
    roles: frozenset[str]
    scopes: frozenset[str]
    #: RFC 7638 thumbprint of the key the session is bound to (``cnf.jkt``).
    jkt: str | None = None


class _Section(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    pass


Seconds = Annotated[float, msgspec.Meta(gt=0, le=86_400)]


class Escalation(_Section, frozen=True):
    """Params that escalate a tool to the approval flow (e.g. amount above 1000)."""

    param: str
    above: float


class RateLimit(_Section, frozen=True):
    """At most ``requests`` authorizations per caller per ``per_s`` seconds."""

    requests: Annotated[int, msgspec.Meta(ge=1)]
    per_s: Seconds = 60.0


class ConfirmationRules(_Section, frozen=True):
    """The rule-based confirmation agent's rules for one tool.

    Deny above ``deny_above`` or past the velocity limit; approve at or below
    ``auto_approve_max`` when the recipient (if an allow-list is set) is on
    it; otherwise pass the decision to human approvers.
    """

    amount_param: str = "amount"
    auto_approve_max: float | None = None
    deny_above: float | None = None
    recipient_param: str | None = None
    allowed_recipients: frozenset[str] = frozenset()
    #: Most restricted requests per requester per window before denial.
    velocity_max: Annotated[int, msgspec.Meta(ge=1)] | None = None
    velocity_window_s: Seconds = 3600.0


class ToolPolicy(_Section, frozen=True):
    roles: frozenset[str] = frozenset()
    scopes: frozenset[str] = frozenset()
    token_ttl_s: Seconds | None = None
    #: Param thresholds that send a lower tier through approval.
    escalate: tuple[Escalation, ...] = ()
    approver_roles: frozenset[str] = frozenset()
    #: Distinct approvers needed.
    quorum: Annotated[int, msgspec.Meta(ge=1, le=10)] = 1
    approval_ttl_s: Seconds | None = None
    rate_limit: RateLimit | None = None
    #: Extra confidential-tier checks (added to the tool's own).
    checks: tuple[ParamCheck, ...] = ()
    #: Extra result masks (added to the tool's own): path -> rule.
    mask: dict[str, str] = msgspec.field(default_factory=dict)
    confirmation: ConfirmationRules | None = None


class Defaults(_Section, frozen=True):
    #: Lifetime of a granted transaction token (also after approval).
    token_ttl_s: Annotated[float, msgspec.Meta(gt=0, le=600)] = 30.0
    #: How long a transaction may wait for approval; expiry counts as denial.
    approval_ttl_s: Seconds = 600.0
    approver_roles: frozenset[str] = frozenset({"approver"})
    rate_limit: RateLimit | None = None
    #: Requests one caller (session ``sub``) may have in flight at once on one
    #: endpoint of one worker process. Past it the caller gets ``rate_limited``
    #: (retryable) while other callers are served as usual, so one agent's burst
    #: cannot take the worker's capacity from everyone else. The default is one
    #: process's Redis pool, and a quarter of an endpoint's ``service.max_inflight``.
    max_inflight_per_caller: Annotated[int, msgspec.Meta(ge=1, le=100_000)] = 256
    #: Whether every human approver must sign their decision with their own key
    #: (always required of an approver whose session is bound to a key).
    signed_decisions: bool = False


class Policy(_Section, frozen=True):
    defaults: Defaults = msgspec.field(default_factory=Defaults)
    tools: dict[str, ToolPolicy] = msgspec.field(default_factory=dict)

    def rules(self, tool: str) -> Rules:
        """Everything this policy says about ``tool``, with defaults applied."""
        rule = self.tools.get(tool)
        d = self.defaults
        if rule is None:
            return Rules(tool, False, d.token_ttl_s, d.approval_ttl_s, d.approver_roles)
        return Rules(
            tool=tool,
            listed=True,
            token_ttl_s=rule.token_ttl_s or d.token_ttl_s,
            approval_ttl_s=rule.approval_ttl_s or d.approval_ttl_s,
            approver_roles=rule.approver_roles or d.approver_roles,
            quorum=rule.quorum,
            rate_limit=rule.rate_limit or d.rate_limit,
            roles=rule.roles,
            scopes=rule.scopes,
            escalate=rule.escalate,
            checks=rule.checks,
            mask=rule.mask,
            confirmation=rule.confirmation,
        )

    def allows(self, caller: Caller, tool: str) -> bool:
        return self.rules(tool).allows(caller)

    @property
    def all_approver_roles(self) -> frozenset[str]:
        """Every role that approves some tool: who may list approvals and read status."""
        roles = set(self.defaults.approver_roles)
        for rule in self.tools.values():
            roles |= rule.approver_roles
        return frozenset(roles)

    @property
    def max_lifetime_s(self) -> float:
        """The longest a transaction can stay usable: pending approval, then its token."""
        rules = list(self.tools.values())
        approval = max([self.defaults.approval_ttl_s, *(r.approval_ttl_s or 0 for r in rules)])
        token = max([self.defaults.token_ttl_s, *(r.token_ttl_s or 0 for r in rules)])
        return approval + token


@dataclass(frozen=True, slots=True)
class Rules:
    """What policy says about one tool, resolved once per request."""

    tool: str
    #: Whether policy lists the tool at all (a tool with no entry is usable by nobody).
    listed: bool
    token_ttl_s: float
    approval_ttl_s: float
    approver_roles: frozenset[str]
    quorum: int = 1
    rate_limit: RateLimit | None = None
    roles: frozenset[str] = frozenset()
    scopes: frozenset[str] = frozenset()
    escalate: tuple[Escalation, ...] = ()
    checks: tuple[ParamCheck, ...] = ()
    mask: Mapping[str, str] = field(default_factory=dict)
    confirmation: ConfirmationRules | None = None

    def allows(self, caller: Caller) -> bool:
        if not self.listed:
            return False
        if "*" in self.roles:
            return True
        return bool(self.roles & caller.roles) or bool(self.scopes & caller.scopes)

    def escalation(self, params: Mapping[str, Any]) -> str | None:
        """Why these params need approval, if they do (e.g. ``amount above 1000``)."""
        for esc in self.escalate:
            value = params.get(esc.param)
            if isinstance(value, int | float) and not isinstance(value, bool) and value > esc.above:
                return f"{esc.param} above {esc.above:g}"
        return None


def load_policy(path: Path) -> Policy:
    try:
        return msgspec.convert(tomllib.loads(path.read_text()), Policy)
    except (OSError, tomllib.TOMLDecodeError, msgspec.ValidationError) as exc:
        raise ValueError(f"{path}: {exc}") from exc
