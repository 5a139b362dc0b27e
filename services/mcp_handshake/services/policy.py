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
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import msgspec

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
    requests: Annotated[int, msgspec.Meta(ge=1)]
    per_s: Seconds = 60.0


class ToolPolicy(_Section, frozen=True):
    roles: frozenset[str] = frozenset()
    scopes: frozenset[str] = frozenset()
    token_ttl_s: Seconds | None = None
    escalate: tuple[Escalation, ...] = ()
    approver_roles: frozenset[str] = frozenset()
    quorum: Annotated[int, msgspec.Meta(ge=1, le=10)] = 1
    approval_ttl_s: Seconds | None = None
    rate_limit: RateLimit | None = None


class Defaults(_Section, frozen=True):
    #: Lifetime of a granted transaction token.
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

    @property
    def max_token_ttl_s(self) -> float:
        ttls = [r.token_ttl_s for r in self.tools.values() if r.token_ttl_s is not None]
        return max([self.defaults.token_ttl_s, *ttls])


def load_policy(path: Path) -> Policy:
    try:
        return msgspec.convert(tomllib.loads(path.read_text()), Policy)
    except (OSError, tomllib.TOMLDecodeError, msgspec.ValidationError) as exc:
        raise ValueError(f"{path}: {exc}") from exc
