"""Pins: the hash of an upstream definition a catalog tool was imported from."""

from __future__ import annotations

import json
from typing import Any

import rfc8785

from mcp_handshake.shared.hashing import canonical_json, sha256_tagged

__all__ = ["mcp_pin", "pin_of"]


def pin_of(definition: Any) -> str:
    """``sha256:`` over the RFC 8785 (JCS) form of ``definition``."""
    try:
        return sha256_tagged(canonical_json(definition))
    except rfc8785.CanonicalizationError:
        # JCS has no form for integers past 2^53 (found in some specs' examples):
        # those definitions are pinned by their sorted JSON instead.
        text = json.dumps(definition, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return sha256_tagged(text.encode())


def mcp_pin(tool: Any) -> str:
    """The pin of an MCP tool: its name, description, input schema and annotations."""
    hints = tool.annotations
    annotations = hints.model_dump(mode="json", by_alias=True, exclude_none=True) if hints else None
    return pin_of({"name": tool.name, "description": tool.description or "",
                   "inputSchema": tool.input_schema, "annotations": annotations})  # fmt: skip
