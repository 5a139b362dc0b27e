"""One tool call, bound once per phase: normalized params, their hash, the tier plan.

Both phases call :func:`bind` exactly once: authorize to decide and hash what
it grants, execute to check that what it is asked to run is what was granted.

Within one batch (:func:`batch_bindings`), operations that send a tool the same
params (the same JSON, byte for byte) share its normalization and RFC 8785 hash,
computed for the first of them: the params model's validation and the
canonical form depend on nothing but the tool and those params. Each operation
still gets params of its own (a fresh copy) and its own decision and tier plan.
Params that fail the model are refused for every operation that sends them, each
on its own (nothing is kept for them).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import msgspec

from mcp_handshake.services.core.policy import Rules
from mcp_handshake.services.core.tiers import TierPlan, plan
from mcp_handshake.services.core.tools import Tool
from mcp_handshake.shared.hashing import params_hash

__all__ = ["Bindings", "Bound", "Decide", "batch_bindings", "bind"]

_encode = msgspec.json.encode
_decode = msgspec.json.decode


@dataclass(frozen=True, slots=True)
class Bound:
    tool: Tool
    #: The params as validated and normalized by the tool's model (JSON values).
    params: dict[str, Any]
    #: ``sha256:<hex>`` over the RFC 8785 form of ``params``.
    ph: str
    plan: TierPlan


#: Policy's decision for the normalized params of one call.
Decide = Callable[[dict[str, Any]], Rules]


def _normalized(tool: Tool, raw: Mapping[str, Any]) -> tuple[dict[str, Any], str]:
    params = tool.normalize(raw)
    return params, params_hash(params)


class Bindings:
    """The normalized params and hash of each distinct (tool, params) of one batch."""

    def __init__(self) -> None:
        self._seen: dict[tuple[int, bytes], tuple[Tool, bytes, str]] = {}
        #: Normalizations done, and answered again (for tests and the bench).
        self.done = 0
        self.reused = 0

    def normalized(self, tool: Tool, raw: Mapping[str, Any]) -> tuple[dict[str, Any], str]:
        try:
            key = (id(tool), _encode(raw))
        except (TypeError, msgspec.EncodeError):
            return _normalized(tool, raw)
        hit = self._seen.get(key)
        if hit is not None and hit[0] is tool:
            self.reused += 1
            return _decode(hit[1]), hit[2]  # a copy: no operation sees another's dict
        params, ph = _normalized(tool, raw)
        self.done += 1
        self._seen[key] = (tool, _encode(params), ph)
        return params, ph


_BATCH: ContextVar[Bindings | None] = ContextVar("handshake_batch_bindings", default=None)


@contextlib.contextmanager
def batch_bindings() -> Iterator[Bindings]:
    """The bindings shared by the operations run inside (tasks started within inherit
    them); nothing is shared with another batch."""
    bindings = Bindings()
    token = _BATCH.set(bindings)
    try:
        yield bindings
    finally:
        _BATCH.reset(token)


def bind(tool: Tool, raw: Mapping[str, Any], decide: Decide) -> Bound:
    """Validate and normalize ``raw`` for ``tool`` (``InvalidParams``), hash the result,
    and plan its tier under what policy ``decide``s for exactly those params."""
    shared = _BATCH.get()
    params, ph = shared.normalized(tool, raw) if shared is not None else _normalized(tool, raw)
    return Bound(tool, params, ph, plan(tool, decide(params), params))
