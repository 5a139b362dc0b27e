"""The mediated catalog as MCP tools: names, schemas, and hints from the operation
and the tier.

Where the catalog (``handshake.v1.tools``) says the operation only reads
(``read_only``: an HTTP operation's method), that sets ``readOnlyHint``, and a
read-only operation is never destructive. Otherwise the hints follow the tier,
leaning to the careful side (a host may skip a confirmation for a read-only tool,
never for the others):

========== ============ =============== ===============
tier       readOnlyHint destructiveHint idempotentHint
========== ============ =============== ===============
public     true         false           true
internal   false        false           false
confidential false      false           false
restricted false        true            false
========== ============ =============== ===============

``idempotentHint`` is true only for a read-only tool: MCP means "calling it again
with the same arguments has no further effect", and every mediated call of a write
is a transaction of its own (its own ``Idempotency-Key``), so two identical calls
write twice. The target's Idempotency-Key support (``idempotent`` in the catalog)
makes a *retry of one transaction* safe, which is not the same thing.

Every tool also carries ``openWorldHint: true`` (it reaches a target API) and,
in ``_meta``, its mediated name and tier.
"""

from __future__ import annotations

import logging
from typing import Any

import mcp_types as types

from mcp_handshake.shared.wire import ToolInfo

from ._names import host_name

__all__ = ["META", "as_mcp_tools", "hints", "own_tools"]

log = logging.getLogger("mcp_handshake.mcp")

#: Prefix of this server's ``_meta`` keys.
META = "mcp-handshake/"

_HINTS: dict[str, tuple[bool, bool, bool]] = {
    "public": (True, False, True),
    "internal": (False, False, False),
    "confidential": (False, False, False),
    "restricted": (False, True, False),
}


def hints(
    tier: str, read_only_op: bool | None = None, idempotent_op: bool | None = None
) -> types.ToolAnnotations:
    """Hints for a tool of ``tier`` (an unknown tier gets the restricted ones), with what
    the catalog says of its operation over the tier's defaults. ``idempotent_op`` is
    accepted and ignored (see the module docstring)."""
    read_only, destructive, _ = _HINTS.get(tier, _HINTS["restricted"])
    if read_only_op is not None:
        read_only = read_only_op
        destructive = destructive and not read_only_op
    # Only a read repeats without further effect; ``idempotent_op`` (the target's
    # Idempotency-Key support) is about retrying one transaction, not repeating a call.
    idempotent = read_only
    return types.ToolAnnotations(
        read_only_hint=read_only,
        destructive_hint=destructive,
        idempotent_hint=idempotent,
        open_world_hint=True,
    )


def _input_schema(schema: dict[str, Any]) -> dict[str, Any]:
    # MCP wants an object at the root; pydantic models always give one.
    return schema if schema.get("type") == "object" else {**schema, "type": "object"}


def as_mcp_tools(catalog: list[ToolInfo]) -> tuple[list[types.Tool], dict[str, ToolInfo]]:
    """MCP tools for the catalog, and host name -> tool; tools without a reversible
    host-safe name are left out (and logged)."""
    tools: list[types.Tool] = []
    by_host: dict[str, ToolInfo] = {}
    for info in catalog:
        name = host_name(info.name)
        if name is None or name in by_host:
            log.warning("tool %r has no unambiguous host-safe name; not offered", info.name)
            continue
        by_host[name] = info
        tools.append(
            types.Tool(
                name=name,
                title=info.name,
                description=info.description,
                input_schema=_input_schema(info.params_schema),
                annotations=hints(info.tier, info.read_only, info.idempotent),
                _meta={f"{META}tool": info.name, f"{META}tier": info.tier},
            )
        )
    return tools, by_host


_TXN_SCHEMA: dict[str, Any] = {
    "type": "string",
    "minLength": 1,
    "maxLength": 64,
    "description": "The transaction id a pending result gave.",
}


def own_tools(wait_bound_s: float) -> list[types.Tool]:
    """``handshake_status`` and ``handshake_wait``: following up on pending approvals."""
    return [
        types.Tool(
            name="handshake_status",
            description="Where a transaction stands (pending_approval, approved, denied, "
            "expired, executed, ...). Use it after a call answered 'pending approval'.",
            input_schema={
                "type": "object",
                "properties": {"transaction_id": _TXN_SCHEMA},
                "required": ["transaction_id"],
                "additionalProperties": False,
            },
            annotations=types.ToolAnnotations(
                read_only_hint=True,
                destructive_hint=False,
                idempotent_hint=True,
                open_world_hint=False,
            ),
        ),
        types.Tool(
            name="handshake_wait",
            description="Wait for a pending call's approval, then run it and return its "
            "result. Answers 'pending approval' again if still undecided after wait_s.",
            input_schema={
                "type": "object",
                "properties": {
                    "transaction_id": _TXN_SCHEMA,
                    "wait_s": {
                        "type": "number",
                        "minimum": 0,
                        "maximum": wait_bound_s,
                        "description": f"Seconds to wait (default and at most {wait_bound_s:g}).",
                    },
                },
                "required": ["transaction_id"],
                "additionalProperties": False,
            },
            annotations=types.ToolAnnotations(
                read_only_hint=False,
                destructive_hint=True,
                idempotent_hint=False,
                open_world_hint=True,
            ),
        ),
    ]
