"""A deployment's tools: its Python tool modules and its catalogs, in one registry."""

from __future__ import annotations

import dataclasses

from mcp_handshake.services.catalog.loader import load_catalogs
from mcp_handshake.services.core.config import HandshakeConfig
from mcp_handshake.services.core.tools import ToolRegistry

__all__ = ["open_tools"]


def open_tools(config: HandshakeConfig) -> tuple[HandshakeConfig, ToolRegistry]:
    """The registry of every tool, and the configuration with the catalogs' targets.

    A target that ``handshake.toml`` declares (``[targets.NAME]``) is taken from there
    whole; otherwise from the catalog, if it names a base URL.
    """
    catalogs = load_catalogs(config.catalogs)
    modules = ToolRegistry.from_modules(config.tool_modules)
    registry = ToolRegistry([*modules, *(t for c in catalogs for t in c.tools)])
    targets = {}
    for c in catalogs:
        declared = c.target_config()
        if declared is not None:
            targets[c.target] = declared
    return dataclasses.replace(config, targets={**targets, **config.targets}), registry
