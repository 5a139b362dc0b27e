"""Policy as data: who may use which tool, with which limits.

Loaded from a TOML file; changing who may do what needs no code change.
Anything not granted is denied: a tool with no entry is usable by nobody.

```toml
[defaults]
token_ttl_s = 30

[tools."payments.create_invoice"]
roles = ["billing"]          # "*" = any signed-in user
scopes = ["payments:write"]  # alternatively, any of these OAuth scopes
```
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import msgspec

from mcp_handshake.services.core.checks import ParamCheck

__all__ = ["Caller", "Policy", "ToolPolicy", "load_policy"]


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


class Policy(_Section, frozen=True):
    defaults: Defaults = msgspec.field(default_factory=Defaults)
    tools: dict[str, ToolPolicy] = msgspec.field(default_factory=dict)

    def for_tool(self, tool: str) -> ToolPolicy | None:
        return self.tools.get(tool)

    def allows(self, caller: Caller, tool: str) -> bool:
        rule = self.tools.get(tool)
        if rule is None:
            return False
        if "*" in rule.roles:
            return True
        return bool(rule.roles & caller.roles) or bool(rule.scopes & caller.scopes)

    def token_ttl_s(self, tool: str) -> float:
        rule = self.tools.get(tool)
        if rule is not None and rule.token_ttl_s is not None:
            return rule.token_ttl_s
        return self.defaults.token_ttl_s

    def approval_ttl_s(self, tool: str) -> float:
        rule = self.tools.get(tool)
        if rule is not None and rule.approval_ttl_s is not None:
            return rule.approval_ttl_s
        return self.defaults.approval_ttl_s

    def approver_roles(self, tool: str) -> frozenset[str]:
        rule = self.tools.get(tool)
        if rule is not None and rule.approver_roles:
            return rule.approver_roles
        return self.defaults.approver_roles

    def rate_limit(self, tool: str) -> RateLimit | None:
        rule = self.tools.get(tool)
        if rule is not None and rule.rate_limit is not None:
            return rule.rate_limit
        return self.defaults.rate_limit

    def escalation(self, tool: str, params: Mapping[str, Any]) -> str | None:
        """Why these params need approval, if they do (e.g. ``amount above 1000``)."""
        rule = self.tools.get(tool)
        for esc in rule.escalate if rule else ():
            value = params.get(esc.param)
            if isinstance(value, int | float) and not isinstance(value, bool) and value > esc.above:
                return f"{esc.param} above {esc.above:g}"
        return None

    @property
    def max_lifetime_s(self) -> float:
        """The longest a transaction can stay usable: pending approval, then its token."""
        rules = list(self.tools.values())
        approval = max([self.defaults.approval_ttl_s, *(r.approval_ttl_s or 0 for r in rules)])
        token = max([self.defaults.token_ttl_s, *(r.token_ttl_s or 0 for r in rules)])
        return approval + token


def load_policy(path: Path) -> Policy:
    try:
        return msgspec.convert(tomllib.loads(path.read_text()), Policy)
    except (OSError, tomllib.TOMLDecodeError, msgspec.ValidationError) as exc:
        raise ValueError(f"{path}: {exc}") from exc
