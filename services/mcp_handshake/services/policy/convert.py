"""``mcp-handshake policy convert policy.toml``: the retired TOML policy, as Cedar.

The TOML format is read only here. Each tool entry becomes permits of the same
meaning: roles or scopes as a condition on the principal, each ``escalate``
threshold as an ``@approval`` permit (the first threshold crossed gives the
reason, as before), TTLs, quorum, rate limit, masks and confirmation knobs as
annotations. ``[defaults]`` become the ``[policy]`` section of ``handshake.toml``,
printed as a comment at the top. Policy-level ``checks`` do not convert (their
regular expressions are not Cedar's ``like``): move them to the tool's definition,
or write ``forbid`` policies; the converter refuses the file until then.
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import Annotated, Any

import msgspec

from mcp_handshake.services.core.policy import RateLimit
from mcp_handshake.services.core.tools import Tool
from mcp_handshake.services.policy.annotations import ConfirmationRules
from mcp_handshake.services.policy.compiled import PolicyError
from mcp_handshake.services.policy.schema import param_types

__all__ = ["convert_toml"]


class _S(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    pass


class Escalation(_S, frozen=True):
    param: str
    above: float


class ToolPolicy(_S, frozen=True):
    roles: list[str] = []
    scopes: list[str] = []
    token_ttl_s: float | None = None
    escalate: list[Escalation] = []
    approver_roles: list[str] = []
    quorum: Annotated[int, msgspec.Meta(ge=1, le=10)] = 1
    approval_ttl_s: float | None = None
    rate_limit: RateLimit | None = None
    checks: list[dict[str, Any]] = []
    mask: dict[str, str] = {}
    confirmation: ConfirmationRules | None = None


class Defaults(_S, frozen=True):
    token_ttl_s: float = 30.0
    approval_ttl_s: float = 600.0
    approver_roles: tuple[str, ...] = ("approver",)
    rate_limit: RateLimit | None = None
    max_inflight_per_caller: int = 256
    signed_decisions: bool = False


class LegacyPolicy(_S, frozen=True):
    defaults: Defaults = msgspec.field(default_factory=Defaults)
    tools: dict[str, ToolPolicy] = {}


def _lit(value: str) -> str:
    return json.dumps(value)


def _dec(value: float) -> str:
    text = f"{Decimal(repr(value)):f}"
    return text if "." in text else f"{text}.0"


def _above(esc: Escalation, types: Mapping[str, Any]) -> str | None:
    """The Cedar test for ``param > above``, or ``None`` when the param cannot escalate."""
    typ = types.get(esc.param)
    if typ is None:
        return None
    ref = f"context.params.{esc.param}"
    if typ.get("name") == "decimal":
        test = f'{ref}.greaterThan(decimal("{_dec(esc.above)}"))'
    elif typ.get("type") == "Long":
        test = f"{ref} > {int(esc.above // 1)}"
    else:
        return None
    return f"(context.params has {esc.param} && {test})" if typ.get("required") is False else test


def _who(rule: ToolPolicy) -> str | None:
    if "*" in rule.roles:
        return None
    parts = [f"principal.{k}.containsAny([{', '.join(map(_lit, sorted(v)))}])"
             for k, v in (("roles", rule.roles), ("scopes", rule.scopes)) if v]  # fmt: skip
    return " || ".join(parts) if len(parts) < 2 else f"({' || '.join(parts)})"


def _notes(rule: ToolPolicy) -> list[str]:
    notes = []
    if rule.token_ttl_s is not None:
        notes.append(f'@token_ttl_s("{rule.token_ttl_s:g}")')
    if rule.approval_ttl_s is not None:
        notes.append(f'@approval_ttl_s("{rule.approval_ttl_s:g}")')
    if rule.approver_roles:
        notes.append(f"@approver_roles({_lit(' '.join(sorted(rule.approver_roles)))})")
    if rule.quorum != 1:
        notes.append(f'@quorum("{rule.quorum}")')
    if rule.rate_limit is not None:
        notes.append(f'@rate_limit("{rule.rate_limit.requests}/{rule.rate_limit.per_s:g}")')
    if rule.mask:
        notes.append(f"@mask({_lit(' '.join(f'{k}={v}' for k, v in rule.mask.items()))})")
    c = rule.confirmation
    for name in c.__struct_fields__ if c is not None else ():
        value = getattr(c, name)
        if value is not None and value != getattr(ConfirmationRules(), name):
            text = " ".join(sorted(value)) if isinstance(value, frozenset) else f"{value:g}" \
                if isinstance(value, float) else str(value)  # fmt: skip
            notes.append(f"@confirm_{name}({_lit(text)})")
    return notes


def _permit(pid: str, notes: list[str], tool: str, conditions: list[str]) -> str:
    head = "\n".join([f"@id({_lit(pid)})", *notes])
    body = f"permit (principal, action == Action::{_lit(tool)}, resource)"
    when = " &&\n  ".join(conditions)
    return f"{head}\n{body}" + (f"\nwhen {{\n  {when}\n}};\n" if conditions else ";\n")


def _tool(name: str, rule: ToolPolicy, tool: Tool | None) -> str:
    if rule.checks:
        raise PolicyError(f'[tools."{name}"] checks: not convertible; move them to the '
                          "tool's definition, or write forbid policies")  # fmt: skip
    if not rule.roles and not rule.scopes:
        return f"// {name}: no roles or scopes, so nobody may use it (no permit).\n"
    if tool is None:
        return f"// {name}: not in the tool catalog (no permit).\n"
    types = param_types(tool)
    who = _who(rule)
    base = [who] if who else []
    tests = [(e, _above(e, types)) for e in rule.escalate]
    live = [(e, t) for e, t in tests if t is not None]
    notes = _notes(rule)
    out = [_permit(name, notes, name, base + [f"!({t})" for _, t in live])]
    for i, (esc, test) in enumerate(live):
        earlier = [f"!({t})" for _, t in live[:i]]
        reason = _lit(f"{esc.param} above {esc.above:g}")
        out.append(_permit(f"{name}.escalate.{i + 1}", [f"@approval({reason})", *notes],
                           name, base + earlier + [test]))  # fmt: skip
    return "\n".join(out)


def convert_toml(text: str, tools: Iterable[Tool]) -> str:
    """Cedar text meaning what the TOML policy ``text`` meant; ``PolicyError`` if it cannot."""
    try:
        old = msgspec.convert(tomllib.loads(text), LegacyPolicy)
    except (tomllib.TOMLDecodeError, msgspec.ValidationError) as exc:
        raise PolicyError(f"not a policy.toml: {exc}") from None
    by_name = {t.name: t for t in tools}
    d = old.defaults
    header = ["// Converted from policy.toml. Put these in handshake.toml:", "// [policy]"]
    header += [f"// {k} = {json.dumps(v)}" for k, v in msgspec.to_builtins(d).items()
               if v is not None and not isinstance(v, dict)]  # fmt: skip
    if d.rate_limit is not None:
        header.append(f"// rate_limit = {{ requests = {d.rate_limit.requests}, "
                      f"per_s = {d.rate_limit.per_s:g} }}")  # fmt: skip
    body = [_tool(name, rule, by_name.get(name)) for name, rule in old.tools.items()]
    return "\n".join(header) + "\n\n" + "\n".join(body)
