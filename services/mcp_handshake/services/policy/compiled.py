"""One loaded policy set: validated against the catalog's schema, partitioned by action.

Cedar evaluates every policy it is given, so the set is split at load: each tool
gets the policies whose action scope can match it (``action``, ``action ==`` the
tool, ``action in`` the tool or one of its groups) and whose resource scope can
match its target. Within a tool, policies are indexed by principal
(:mod:`.selection`): a decision gives Cedar only those that can apply to the
caller. Decisions are the same as over the whole set; the cost is that of the
policies that can apply.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import cedarpy
import msgspec

from mcp_handshake.services.core.config import PolicyDefaults
from mcp_handshake.services.core.tools import Tool
from mcp_handshake.services.policy.annotations import ConfirmationRules, Effects, effects_of
from mcp_handshake.services.policy.reads import Reads, reads_of
from mcp_handshake.services.policy.schema import ParamsConverter, cedar_schema, converter, group_ids
from mcp_handshake.services.policy.selection import Index, Key, index_of, resource_can_match

__all__ = ["ActionSet", "CompiledPolicy", "PolicyError", "compile_policy"]


class PolicyError(ValueError):
    """A policy set that cannot be used; the message names the policy and the line."""


@dataclass(frozen=True, slots=True)
class ActionSet:
    """What one tool's decisions need, built once at load."""

    tool: Tool
    #: The tool's policies by principal; each caller's subset is built from it.
    index: Index
    effects: Mapping[str, Effects]
    forbids: frozenset[str]
    params: ParamsConverter
    #: The context attributes its policies read (a request carries only those).
    reads: Reads
    #: The action entity (with its groups) as Cedar JSON.
    action_entity: dict[str, Any]


@dataclass(frozen=True, slots=True)
class CompiledPolicy:
    text: str
    #: ``sha256:<hex>`` of the policy text.
    hash: str
    defaults: PolicyDefaults
    actions: Mapping[str, ActionSet]
    ids: tuple[str, ...]
    #: Every action entity, parsed once; each caller's entities add the principal.
    base_entities: cedarpy.Entities
    #: Per caller (bounded; cleared when full): its parsed entities, its keys and the
    #: policy set selected for it per tool (see :mod:`.prepared`).
    callers: dict[Any, Any] = field(default_factory=dict)
    #: Parsed policy sets by (tool, the caller keys that selected them), shared by callers.
    subsets: dict[tuple[str, frozenset[Key]], cedarpy.PolicySet] = field(default_factory=dict)
    #: Cedar's answers by (caller, tool, context JSON) (bounded; see :mod:`.prepared`).
    answers: dict[tuple[Any, str, str], Any] = field(default_factory=dict)
    #: ``listable`` answers by (caller, tool), for tools whose policies do not read the time.
    listable: dict[tuple[Any, str], bool] = field(default_factory=dict)
    #: Decisions by (tool, verdict, deciding ids): the same ids always mean the same rules.
    decisions: dict[tuple[str, bool, tuple[str, ...]], Any] = field(default_factory=dict)

    def all_effects(self) -> Iterable[Effects]:
        for action in self.actions.values():
            yield from action.effects.values()

    def confirmation(self, tool: str) -> ConfirmationRules | None:
        action = self.actions.get(tool)
        if action is None:
            return None
        found = [e.confirmation for _, e in sorted(action.effects.items()) if e.confirmation]
        return found[0] if found else None


_STATEMENT = re.compile(r"\b(permit|forbid)\s*\(")


def _lines(text: str) -> list[int]:
    """The line each policy starts on, in order (for error messages only)."""
    starts: list[int] = []
    for number, line in enumerate(text.splitlines(), 1):
        code = line.split("//", 1)[0]
        starts.extend(number for _ in _STATEMENT.finditer(code))
    return starts


def _where(pid: str, ids: Mapping[str, str], lines: list[int]) -> str:
    named = ids.get(pid, pid)
    n = int(pid[6:]) if pid.startswith("policy") and pid[6:].isdigit() else -1
    line = f" (line {lines[n]})" if 0 <= n < len(lines) else ""
    return f"policy {named!r}{line}"


def _parse(text: str, source: str) -> dict[str, Any]:
    try:
        est: dict[str, Any] = msgspec.json.decode(cedarpy.policies_to_json_str(text))
    except ValueError as exc:
        raise PolicyError(f"{source}: does not parse as Cedar: {exc}") from None
    if est.get("templates"):
        raise PolicyError(f"{source}: templates are not supported; write static policies")
    return est


def _validate(text: str, schema: dict[str, Any], source: str, lines: list[int]) -> None:
    result = cedarpy.validate_policies(text, schema)
    if result.validation_passed:
        return
    ids = result.id_annotations_by_policy_id
    problems = [f"{source}: {_where(e.policy_id, ids, lines)}: {e.error}" for e in result.errors]
    raise PolicyError("\n".join(problems) or f"{source}: does not validate")


def _matches(scope: Mapping[str, Any], names: set[str]) -> bool:
    op = scope.get("op")
    if op == "All":
        return True
    entities = scope.get("entities") or [scope.get("entity") or {}]
    return any(e.get("id") in names for e in entities)


def _action_set(
    tool: Tool, named: dict[str, Any], effects: dict[str, Effects], by_principal: bool
) -> ActionSet:
    names = {tool.name, *group_ids(tool)}
    mine = {pid: est for pid, est in named.items() if _matches(est.get("action", {}), names)
            and resource_can_match(est.get("resource", {}), tool.target)}  # fmt: skip
    entity = {"uid": {"type": "Action", "id": tool.name}, "attrs": {},
              "parents": [{"type": "Action", "id": g} for g in group_ids(tool)]}  # fmt: skip
    reads = reads_of(mine.values())
    return ActionSet(
        tool=tool,
        index=index_of(mine, by_principal),
        effects={pid: effects[pid] for pid in mine},
        forbids=frozenset(pid for pid, est in mine.items() if est["effect"] == "forbid"),
        params=converter(tool, reads.params),
        reads=reads,
        action_entity=entity,
    )


def compile_policy(
    text: str,
    tools: Iterable[Tool],
    defaults: PolicyDefaults,
    source: str = "policy",
    *,
    by_principal: bool = True,
) -> CompiledPolicy:
    """Parse, validate against the schema of ``tools``, and partition; ``PolicyError``.
    ``by_principal=False`` partitions by action and resource only (for comparison)."""
    tools = list(tools)
    lines = _lines(text)
    est = _parse(text, source)
    _validate(text, cedar_schema(tools), source, lines)
    named: dict[str, Any] = {}
    effects: dict[str, Effects] = {}
    for pid, policy in est.get("staticPolicies", {}).items():
        notes = policy.get("annotations") or {}
        key = notes.get("id") or pid
        where = _where(pid, {pid: key}, lines)
        if key in named:
            raise PolicyError(f"{source}: {where}: the @id is used twice")
        try:
            effects[key] = effects_of(notes, policy["effect"])
        except ValueError as exc:
            raise PolicyError(f"{source}: {where}: {exc}") from None
        named[key] = policy
    digest = hashlib.sha256(text.encode()).hexdigest()
    actions = {t.name: _action_set(t, named, effects, by_principal) for t in tools}
    groups = {g for t in tools for g in group_ids(t)}
    entities = [a.action_entity for a in actions.values()]
    entities += [{"uid": {"type": "Action", "id": g}, "attrs": {}, "parents": []} for g in groups]
    return CompiledPolicy(
        text=text,
        hash=f"sha256:{digest}",
        defaults=defaults,
        actions=actions,
        ids=tuple(named),
        base_entities=cedarpy.Entities.from_json_str(msgspec.json.encode(entities).decode()),
    )
