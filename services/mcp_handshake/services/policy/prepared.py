"""What a decision hands Cedar besides the context, parsed once and kept, and the call.

Per caller, kept with the policy set in force: its entities (the principal and every
action, one cedarpy ``Entities`` handle), the keys its principal entity satisfies, and
per tool the policy set selected for it (:mod:`.selection`). Selected sets are parsed
once per (tool, matching keys) and shared by every caller whose keys select the same
policies. A request then parses only its context.

Cedar's answer is a function of the request, the entities and the policies: within one
policy set, of the caller, the tool and the context (the principal, the action and the
resource are the caller's and the tool's; the entities and the selected policies are
the caller's; the time, when a policy reads it, is in the context). So the answer to
the same (caller, tool, context) is kept and given again without calling Cedar, which
in a busy worker costs several times what it costs in a tight loop (its code and data
are no longer in the CPU's caches). A reload is a new policy set, with none kept.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import cedarpy
import msgspec

from mcp_handshake.services.core.policy import Caller
from mcp_handshake.services.policy.compiled import ActionSet, CompiledPolicy
from mcp_handshake.services.policy.selection import Key, caller_keys

__all__ = [
    "ANSWER_CACHE",
    "ENTITY_CACHE",
    "SUBSET_CACHE",
    "Answer",
    "Prepared",
    "answer",
    "authorize",
    "policies",
    "view",
]

#: Callers whose parsed entities and selected policy sets are kept per policy set.
ENTITY_CACHE = 10_000
#: Selected policy sets kept per policy set (shared by callers with the same keys).
SUBSET_CACHE = 10_000
#: Cedar's answers kept per policy set, for contexts of at most ``ANSWER_CONTEXT_MAX``
#: characters (a few MB at most).
ANSWER_CACHE = 10_000
ANSWER_CONTEXT_MAX = 1024

#: (allowed, the determining policy ids, the errors).
Answer = tuple[bool, tuple[str, ...], tuple[str, ...]]

_encode = msgspec.json.encode


@dataclass(slots=True)
class Prepared:
    entities: cedarpy.Entities
    keys: frozenset[Key]
    #: The policy set selected for this caller, per tool.
    sets: dict[str, cedarpy.PolicySet] = field(default_factory=dict)


def principal(caller: Caller) -> dict[str, Any]:
    """The principal entity: a member of ``Role::"<role>"`` and ``Group::"<group>"`` for
    each of its roles and groups (entities that are not in the store: no ancestors)."""
    parents = [{"type": "Role", "id": r} for r in sorted(caller.roles)]
    parents += [{"type": "Group", "id": g} for g in sorted(caller.groups)]
    return {"uid": {"type": "User", "id": caller.sub},
            "attrs": {"roles": sorted(caller.roles), "scopes": sorted(caller.scopes),
                      "groups": sorted(caller.groups)}, "parents": parents}  # fmt: skip


def view(compiled: CompiledPolicy, caller: Caller) -> Prepared:
    """The caller's entities and keys, parsed once per caller."""
    prepared: Prepared | None = compiled.callers.get(caller)
    if prepared is None:
        user = principal(caller)
        if len(compiled.callers) >= ENTITY_CACHE:
            compiled.callers.clear()
        entities = compiled.base_entities.with_added_json_str(f"[{_encode(user).decode()}]")
        prepared = compiled.callers[caller] = Prepared(entities, caller_keys(user))
    return prepared


def policies(compiled: CompiledPolicy, prepared: Prepared, action: ActionSet) -> cedarpy.PolicySet:
    """The action's policies that can apply to the caller, parsed once per key set."""
    tool = action.tool.name
    chosen = prepared.sets.get(tool)
    if chosen is None:
        key = (tool, action.index.matched(prepared.keys))
        chosen = compiled.subsets.get(key)
        if chosen is None:
            if len(compiled.subsets) >= SUBSET_CACHE:
                compiled.subsets.clear()
            doc = action.index.document(action.index.selected(key[1]))
            chosen = compiled.subsets[key] = cedarpy.PolicySet.from_json_str(doc)
        prepared.sets[tool] = chosen
    return chosen


class _Diagnostics(msgspec.Struct):
    reason: list[str] = []
    errors: list[str] = []


class _Answer(msgspec.Struct):
    decision: str
    diagnostics: _Diagnostics = msgspec.field(default_factory=_Diagnostics)


_answer = msgspec.json.Decoder(_Answer).decode
#: cedarpy's extension, called directly: its Python wrapper copies the request and
#: decodes the answer with the json module into objects, about a third of the cost of
#: a small decision. Its result is the same JSON the wrapper reads (tested).
_direct = getattr(getattr(cedarpy, "_internal", None), "is_authorized", None)


def authorize(
    request: dict[str, Any], chosen: cedarpy.PolicySet, entities: cedarpy.Entities
) -> tuple[bool, list[str], list[str]]:
    """One Cedar call: (allowed, the determining policy ids, the errors). ``request``'s
    context is a JSON string."""
    inner = getattr(entities, "_inner", None)
    if _direct is not None and inner is not None:
        answer = _answer(_direct(request, chosen, inner, None, False))
        return answer.decision == "Allow", answer.diagnostics.reason, answer.diagnostics.errors
    result = cedarpy.is_authorized(request, chosen, entities)
    return result.allowed, result.diagnostics.reasons, result.diagnostics.errors


def answer(
    compiled: CompiledPolicy, caller: Caller, action: ActionSet, request: dict[str, Any]
) -> Answer:
    """Cedar's answer to ``request`` (``caller`` on ``action``), kept by (caller, tool,
    context) while the context is small."""
    context: str = request["context"]
    key = (caller, action.tool.name, context)
    found: Answer | None = compiled.answers.get(key)
    if found is None:
        prepared = view(compiled, caller)
        chosen = policies(compiled, prepared, action)
        allowed, reasons, errors = authorize(request, chosen, prepared.entities)
        found = (allowed, tuple(reasons), tuple(errors))
        if len(context) <= ANSWER_CONTEXT_MAX:
            if len(compiled.answers) >= ANSWER_CACHE:
                compiled.answers.clear()
            compiled.answers[key] = found
    return found
