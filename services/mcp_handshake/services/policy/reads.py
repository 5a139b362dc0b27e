"""Which context attributes a set of policies reads, found in their parsed form.

A request's context is built with only those (the cost of a Cedar call grows with
the size of the context it parses): the top-level attributes read, and within
``params``, ``time`` and ``agent`` only the fields read (``has`` counts as a read).
A policy that uses ``context``, or one of these records, as a whole gets all of it.
Leaving out an attribute no policy reads cannot change a decision.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

__all__ = ["Reads", "reads_of"]

_CONTEXT = {"Var": "context"}


@dataclass(frozen=True, slots=True)
class Reads:
    #: Top-level context attributes read (``None``: all).
    top: frozenset[str] | None
    #: Params read (``None``: all).
    params: frozenset[str] | None
    #: ``context.time`` and ``context.agent`` fields read (``None``: all).
    time: frozenset[str] | None = None
    agent: frozenset[str] | None = None


def _chain(node: Any) -> list[str] | None:
    """``context.a.b`` (or ``context.a has b``) as ``["a", "b"]``; ``None`` otherwise."""
    for op in (".", "has"):
        inner = node.get(op) if isinstance(node, dict) else None
        if isinstance(inner, dict) and "attr" in inner:
            left = inner.get("left")
            if left == _CONTEXT:
                return [inner["attr"]]
            prefix = _chain(left)
            return None if prefix is None else [*prefix, inner["attr"]]
    return None


def _walk(node: Any, chains: list[list[str]]) -> bool:
    """Collect context chains; ``False`` where ``context`` is used as a whole."""
    if node == _CONTEXT:
        return False
    chain = _chain(node)
    if chain is not None:
        chains.append(chain)
        return True
    children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else ()
    return all(_walk(child, chains) for child in children)


def _fields(chains: list[list[str]], record: str) -> frozenset[str] | None:
    if any(c == [record] for c in chains):
        return None
    return frozenset(c[1] for c in chains if c[0] == record and len(c) > 1)


def reads_of(policies: Iterable[dict[str, Any]]) -> Reads:
    chains: list[list[str]] = []
    for est in policies:
        if not _walk(est.get("conditions", []), chains):
            return Reads(None, None)
    top = frozenset(c[0] for c in chains)
    return Reads(top, *(_fields(chains, r) for r in ("params", "time", "agent")))
