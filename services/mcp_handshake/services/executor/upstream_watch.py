"""Upstream MCP definitions re-read at start, every ``watch_interval_s`` of the target,
and at once on the upstream's ``notifications/tools/list_changed``, so that drift is
known (``status``, the ``catalog.drift`` event and metric) before a call is refused.

For the notification, the executor keeps one long-lived session per upstream target
open (``listen``): each call still opens its own session, so a notification sent to
a call's session would be lost. A session that drops (the server died, the endpoint
went away, a ping failed) is opened again with exponential backoff.

Every call checks its pin again anyway (``catalog.mcp_upstream.McpCall``): this watch
only makes drift visible early. An upstream that cannot be listed is logged and tried
again at the next round; it changes nothing.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from functools import partial
from typing import Any

from mcp_handshake.services.catalog.mcp_upstream import (
    CatalogDrift,
    McpCall,
    list_upstream,
    open_session,
)
from mcp_handshake.services.core.tools import ToolRegistry
from mcp_handshake.services.executor.targets import TargetClient
from mcp_handshake.services.runtime.audit import Audit, unique
from mcp_handshake.services.runtime.telemetry import Metrics

__all__ = ["LIST_CHANGED", "upstream_watch"]

log = logging.getLogger(__name__)

LIST_CHANGED = "notifications/tools/list_changed"
#: Seconds between two pings of a listening session (a dead one is found by then).
PING_S = 30.0
#: Backoff of a listening session that dropped: from BACKOFF_S, doubling, at most this.
BACKOFF_S, BACKOFF_MAX_S = 1.0, 60.0


def upstream_watch(
    tools: ToolRegistry,
    targets: dict[str, TargetClient],
    drifted: dict[str, str],
    audit: Audit,
    metrics: Metrics,
) -> Callable[[], Coroutine[Any, Any, None]]:
    """The background task of an executor that runs upstream MCP targets."""
    calls: dict[str, list[McpCall]] = {}
    for tool in tools:
        if isinstance(tool.operation, McpCall) and tool.target in targets:
            calls.setdefault(tool.target, []).append(tool.operation)
    watch = _Watch(calls, targets, drifted, audit, metrics)

    async def run() -> None:
        if calls:
            await asyncio.gather(*(watch.periodic(t) for t in calls),
                                 *(watch.listen(t) for t in calls))  # fmt: skip

    return run


@dataclass(frozen=True, slots=True)
class _Watch:
    calls: dict[str, list[McpCall]]
    targets: dict[str, TargetClient]
    drifted: dict[str, str]
    audit: Audit
    metrics: Metrics

    def record(self, target: str, listed: dict[str, Any]) -> None:
        """Checks the pins of ``target``'s tools against ``listed``: new drift is audited
        (``catalog.drift``, once per change), counted, and kept for ``status``."""
        for call in self.calls[target]:
            try:
                call.check_pin(listed, target)
            except CatalogDrift as drift:
                change = drift.facts["drift"]["change"]
                key = f"{target}.{call.tool}"
                if self.drifted.get(key) != change:
                    self.drifted[key] = change
                    self.metrics.drift.add(1, {"target": target, "tool": call.tool})
                    self.audit.emit(self.audit.event(
                        "catalog.drift", "unavailable", unique=unique(), tool=call.tool,
                        detail=f"{target}: upstream tool {call.tool} {change}",
                    ))  # fmt: skip

    async def periodic(self, target: str) -> None:
        while True:
            try:
                self.record(target, await list_upstream(self.targets[target]))
            except Exception as exc:
                log.warning("upstream %s not listed: %s", target, type(exc).__name__)
            await asyncio.sleep(self.targets[target].config.watch_interval_s)

    async def listen(self, target: str) -> None:
        delay = BACKOFF_S
        while True:
            try:
                await _listen_once(self.targets[target], partial(self.record, target))
            except Exception as exc:
                log.warning("upstream %s: listening session dropped: %s", target,
                            type(exc).__name__)  # fmt: skip
            else:
                delay = BACKOFF_S
            await asyncio.sleep(delay)
            delay = min(delay * 2, BACKOFF_MAX_S)


async def _listen_once(client: TargetClient, record: Callable[[dict[str, Any]], None]) -> None:
    """One listening session: re-lists the tools on every ``list_changed``, pings when
    quiet, and returns (or raises) when the session is gone."""
    cfg = client.config
    changed = asyncio.Event()

    async def on_message(message: Any) -> None:
        if getattr(message, "method", None) == LIST_CHANGED:
            changed.set()
        elif isinstance(message, Exception):
            log.warning("upstream %s: transport error: %s", client.name, type(message).__name__)

    async with asyncio.timeout(cfg.timeout_s):
        headers = await client.auth_headers()
    async with (
        asyncio.timeout(cfg.timeout_s) as opening,  # an upstream that never initializes
        open_session(cfg.command, cfg.base_url, headers, on_message) as session,
    ):
        opening.reschedule(None)
        changed.set()  # list once on (re)connecting: a change while away is not missed
        while True:
            try:
                await asyncio.wait_for(changed.wait(), PING_S)
            except TimeoutError:
                async with asyncio.timeout(cfg.timeout_s):
                    await session.send_ping()
                continue
            changed.clear()
            async with asyncio.timeout(cfg.timeout_s):
                listed = await session.list_tools()
            record({t.name: t for t in listed.tools})
