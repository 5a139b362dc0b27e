"""Which of one tool's policies can apply to a caller: an index built at load.

Cedar evaluates a policy as ``principal scope && action scope && resource scope &&
its conditions in order``, left to right, and ``&&`` stops at the first ``false``
without evaluating what follows. A scope never errors. So a policy whose principal
scope is false for the request, or whose first condition is a ``when`` whose
leftmost conjunct is false without error, is *false without error*: neither a
reason nor an error in Cedar's answer. Leaving such policies out of the set given
to Cedar cannot change the decision, its reasons or its errors.

Each policy of a tool gets at most one key, read from its parsed (JSON) form:

- ``principal == E``: ``("==", type, id)``; it holds only for the principal itself;
- ``principal in E`` (and ``principal is User in E``): ``("in", type, id)``; it holds
  for the principal itself and its ancestors;
- an unconstrained principal (or ``is User``) whose first condition is ``when`` and
  whose leftmost conjunct is ``principal.<roles|groups|scopes>.contains("v")``:
  ``("contains", attr, "v")``; or ``principal in E`` / ``principal == E`` there: as above;
- anything else: no key, the policy always goes to Cedar.

``principal is T`` for a type other than ``User`` never holds: such a policy is left
out; as is, at load, a policy whose resource scope cannot hold for the tool's target
(``Target`` entities are not in the entity store: a target has no ancestors).

A caller's keys are read from the very principal entity given to Cedar
(:func:`caller_keys`): its uid, its parents (its ancestors: ``Role`` and ``Group``
entities are not in the store, so they have no parents of their own) and the
values of its set attributes. A policy goes to Cedar when it has no key or its key
is among the caller's.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import msgspec

__all__ = ["Index", "Key", "caller_keys", "index_of", "resource_can_match"]

#: ``("==" | "in", entity type, entity id)`` or ``("contains", attribute, value)``.
Key = tuple[str, str, str]

_PRINCIPAL = {"Var": "principal"}
_SET_ATTRS = ("roles", "groups", "scopes")
#: A policy left out whatever the caller (a principal type that is never the caller's).
_NEVER = ("never", "", "")


def _entity_key(op: str, entity: Any) -> Key | None:
    if isinstance(entity, Mapping) and isinstance(entity.get("__entity"), Mapping):
        entity = entity["__entity"]
    if not isinstance(entity, Mapping):
        return None
    kind, eid = entity.get("type"), entity.get("id")
    return (op, kind, eid) if isinstance(kind, str) and isinstance(eid, str) else None


def _scope_key(scope: Mapping[str, Any]) -> Key | None:
    """The key of a principal scope; ``None``: unconstrained (or a form not known here)."""
    op = scope.get("op")
    if op in ("==", "in"):
        return _entity_key(op, scope.get("entity"))
    if op == "is":
        if scope.get("entity_type") != "User":
            return _NEVER
        inner = scope.get("in")
        return _entity_key("in", inner.get("entity")) if isinstance(inner, Mapping) else None
    return None


def _leftmost(body: Any) -> Any:
    while isinstance(body, Mapping) and isinstance(body.get("&&"), Mapping):
        body = body["&&"].get("left")
    return body


def _condition_key(conditions: Any) -> Key | None:
    """The key of the leftmost conjunct of a first ``when`` condition, if it has one."""
    if not isinstance(conditions, list) or not conditions:
        return None
    first = conditions[0]
    if not isinstance(first, Mapping) or first.get("kind") != "when":
        return None
    node = _leftmost(first.get("body"))
    if not isinstance(node, Mapping) or len(node) != 1:
        return None
    (op, args), = node.items()  # fmt: skip
    if not isinstance(args, Mapping):
        return None
    left, right = args.get("left"), args.get("right")
    if op in ("in", "==") and left == _PRINCIPAL and isinstance(right, Mapping):
        return _entity_key(op, right.get("Value"))
    if op != "contains" or not isinstance(right, Mapping) or not isinstance(left, Mapping):
        return None
    attr = left.get(".")
    value = right.get("Value")
    if (isinstance(attr, Mapping) and attr.get("left") == _PRINCIPAL
            and attr.get("attr") in _SET_ATTRS and isinstance(value, str)):  # fmt: skip
        return ("contains", attr["attr"], value)
    return None


def policy_key(est: Mapping[str, Any]) -> Key | None:
    """A policy's key (``None``: always given to Cedar)."""
    key = _scope_key(est.get("principal") or {})
    if key is None and (est.get("principal") or {}).get("op") in ("All", "is"):
        key = _condition_key(est.get("conditions"))
    return key


def resource_can_match(scope: Mapping[str, Any], target: str) -> bool:
    """Whether a resource scope can hold for ``Target::"<target>"`` (kept when unsure)."""
    op = scope.get("op")
    if op in ("==", "in"):
        return _entity_key(op, scope.get("entity")) in (None, (op, "Target", target))
    if op == "is":
        inner = scope.get("in")
        inside = _entity_key("in", inner.get("entity")) if isinstance(inner, Mapping) else None
        return scope.get("entity_type") == "Target" and inside in (None, ("in", "Target", target))
    return True


@dataclass(frozen=True, slots=True)
class Index:
    """One tool's policies by key, with each policy's JSON form to build subsets from."""

    #: Policies with no key: given to Cedar for every caller.
    always: frozenset[str]
    keyed: Mapping[Key, frozenset[str]]
    sources: Mapping[str, bytes]

    def matched(self, keys: Iterable[Key]) -> frozenset[Key]:
        """The caller's keys that select some of this tool's policies."""
        keyed = self.keyed
        return frozenset(k for k in keys if k in keyed)

    def selected(self, matched: Iterable[Key]) -> frozenset[str]:
        return self.always.union(*(self.keyed[k] for k in matched))

    def document(self, ids: Iterable[str]) -> str:
        """The Cedar JSON policy set of ``ids``."""
        body = b",".join(msgspec.json.encode(i) + b":" + self.sources[i] for i in sorted(ids))
        return (b'{"staticPolicies":{' + body + b'},"templates":{},"templateLinks":[]}').decode()


def index_of(policies: Mapping[str, Mapping[str, Any]], by_principal: bool = True) -> Index:
    """The index of one tool's policies (``by_principal=False``: every policy always)."""
    always: set[str] = set()
    keyed: dict[Key, set[str]] = {}
    for pid, est in policies.items():
        key = policy_key(est) if by_principal else None
        if key is None:
            always.add(pid)
        elif key != _NEVER:
            keyed.setdefault(key, set()).add(pid)
    return Index(
        always=frozenset(always),
        keyed={k: frozenset(v) for k, v in keyed.items()},
        sources={pid: msgspec.json.encode(est) for pid, est in policies.items()},
    )


def caller_keys(user: Mapping[str, Any]) -> frozenset[Key]:
    """The keys a principal entity (Cedar JSON: uid, attrs, parents) satisfies."""
    uid = user["uid"]
    keys: set[Key] = {("==", uid["type"], uid["id"]), ("in", uid["type"], uid["id"])}
    keys.update(("in", p["type"], p["id"]) for p in user.get("parents", ()))
    attrs = user.get("attrs", {})
    keys.update(("contains", a, v) for a in _SET_ATTRS for v in attrs.get(a, ()))
    return frozenset(keys)
