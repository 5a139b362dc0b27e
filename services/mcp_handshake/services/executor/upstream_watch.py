"""Upstream MCP definitions re-read at start and then periodically, so that drift is
known (``status``, the ``catalog.drift`` event and metric) before a call is refused.

Every call checks its pin again anyway (``catalog.mcp_upstream.McpCall``): this watch
only makes drift visible early. An upstream that cannot be listed is logged and tried
again at the next round; it changes nothing.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any

from mcp_handshake.services.catalog.mcp_upstream import CatalogDrift, McpCall, list_upstream
from mcp_handshake.services.core.tools import ToolRegistry
from mcp_handshake.services.executor.targets import TargetClient
from mcp_handshake.services.runtime.audit import Audit, unique
from mcp_handshake.services.runtime.telemetry import Metrics

__all__ = ["WATCH_INTERVAL_S", "upstream_watch"]

log = logging.getLogger(__name__)

#: Seconds between two readings of every upstream MCP server's tool list.
WATCH_INTERVAL_S = 300.0


def upstream_watch(
    tools: ToolRegistry,
    targets: dict[str, TargetClient],
    drifted: dict[str, str],
    audit: Audit,
    metrics: Metrics,
    interval: float = WATCH_INTERVAL_S,
) -> Callable[[], Coroutine[Any, Any, None]]:
    """The background task of an executor that runs upstream MCP targets."""
    calls: dict[str, list[McpCall]] = {}
    for tool in tools:
        if isinstance(tool.operation, McpCall) and tool.target in targets:
            calls.setdefault(tool.target, []).append(tool.operation)

    async def check(target: str) -> None:
        try:
            listed = await list_upstream(targets[target])
        except Exception as exc:
            log.warning("upstream %s not listed: %s", target, type(exc).__name__)
            return
        for call in calls[target]:
            try:
                call.check_pin(listed, target)
            except CatalogDrift as drift:
                facts = drift.facts["drift"]
                key = f"{target}.{call.tool}"
                if drifted.get(key) != facts["change"]:
                    drifted[key] = facts["change"]
                    metrics.drift.add(1, {"target": target, "tool": call.tool})
                    audit.emit(audit.event(
                        "catalog.drift", "unavailable", unique=unique(), tool=call.tool,
                        detail=f"{target}: upstream tool {call.tool} {facts['change']}",
                    ))  # fmt: skip

    async def watch() -> None:
        while calls:
            await asyncio.gather(*(check(t) for t in calls))
            await asyncio.sleep(interval)

    return watch
