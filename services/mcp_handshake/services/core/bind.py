"""One tool call, bound once per phase: normalized params, their hash, the tier plan.

Both phases call :func:`bind` exactly once: authorize to decide and hash what
it grants, execute to check that what it is asked to run is what was granted.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from mcp_handshake.services.core.policy import Rules
from mcp_handshake.services.core.tiers import TierPlan, plan
from mcp_handshake.services.core.tools import Tool
from mcp_handshake.shared.hashing import params_hash

__all__ = ["Bound", "Decide", "bind"]


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


def bind(tool: Tool, raw: Mapping[str, Any], decide: Decide) -> Bound:
    """Validate and normalize ``raw`` for ``tool`` (``InvalidParams``), hash the result,
    and plan its tier under what policy ``decide``s for exactly those params."""
    params = tool.normalize(raw)
    return Bound(tool, params, params_hash(params), plan(tool, decide(params), params))
