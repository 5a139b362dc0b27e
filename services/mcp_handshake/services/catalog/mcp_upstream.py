"""Upstream MCP servers as targets: a catalog tool that is an upstream server's tool.

The operation runs in the executor (it holds the target's credentials): it opens a
session with the official ``mcp`` SDK, over stdio (a command the executor runs, so a
crashed server is simply started again by the next call) or streamable HTTP (with
the target's bearer or OAuth2 client-credentials token), lists the upstream tools
and checks the pinned definition (drift: ``pins``), then calls the tool.

- ``isError``, or ``structuredContent`` off the tool's own ``outputSchema`` ->
  ``target_error``; ``structuredContent``, else the text content, is
  the result (masked and receipted by execute like any result);
- no answer within the target's timeout -> ``outcome_unknown`` once the call was
  sent, ``unavailable`` before; a server that dies or cannot be reached ->
  ``unavailable``; an answer over ``MAX_RESULT_BYTES`` -> ``target_error``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import msgspec

from mcp_handshake.services.catalog.pins import mcp_pin
from mcp_handshake.shared.errors import HandshakeError, OutcomeUnknown, TargetError, Unavailable

if TYPE_CHECKING:
    from mcp.client.session import MessageHandlerFnT

__all__ = ["MAX_RESULT_BYTES", "CatalogDrift", "McpCall", "list_upstream", "open_session"]

log = logging.getLogger(__name__)

#: A larger answer from an upstream server is refused.
MAX_RESULT_BYTES = 1024 * 1024


@contextlib.asynccontextmanager
async def open_session(
    command: list[str] | None,
    url: str,
    headers: Mapping[str, str],
    on_message: MessageHandlerFnT | None = None,
) -> AsyncIterator[Any]:
    """An initialized ``mcp.ClientSession`` to the upstream server; ``on_message``
    receives the server's notifications (e.g. ``notifications/tools/list_changed``)."""
    from mcp import ClientSession, StdioServerParameters
    from mcp.client.stdio import stdio_client

    if command:
        params = StdioServerParameters(command=command[0], args=command[1:])
        with open(os.devnull, "w") as errlog:  # noqa: ASYNC230 - opening /dev/null
            async with stdio_client(params, errlog=errlog) as (read, write):
                async with ClientSession(read, write, message_handler=on_message) as session:
                    await session.initialize()
                    yield session
        return
    import httpx2
    from mcp.client.streamable_http import streamable_http_client

    async with (
        httpx2.AsyncClient(headers=dict(headers)) as http,
        streamable_http_client(url, http_client=http) as (read, write),
        ClientSession(read, write, message_handler=on_message) as session,
    ):
        await session.initialize()
        yield session


async def list_upstream(target: Any) -> dict[str, Any]:
    """The tools the upstream server of ``target`` (an executor's target client) lists."""
    cfg = target.config
    async with asyncio.timeout(cfg.timeout_s):
        headers = await target.auth_headers()
        async with open_session(cfg.command, cfg.base_url, headers) as session:
            listed = await session.list_tools()
    return {t.name: t for t in listed.tools}


def _handshake_error(exc: BaseException) -> HandshakeError | None:
    """The protocol error inside ``exc`` (anyio wraps errors raised in task groups)."""
    if isinstance(exc, HandshakeError):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = _handshake_error(inner)
            if found is not None:
                return found
    return None


@dataclass(frozen=True, slots=True)
class McpCall:
    """The operation of a catalog tool that is upstream MCP tool ``tool``."""

    tool: str
    pin: str | None

    async def __call__(self, params: Mapping[str, Any], ctx: Any) -> Any:
        cfg = ctx.target.config
        args = {k: v for k, v in params.items() if v is not None}
        sent = False
        try:
            async with asyncio.timeout(cfg.timeout_s):
                headers = await ctx.target.auth_headers()
                async with open_session(cfg.command, cfg.base_url, headers) as session:
                    listed = await session.list_tools()
                    self.check_pin({t.name: t for t in listed.tools}, ctx.target.name)
                    sent = True
                    result = await session.call_tool(self.tool, args)
        except TimeoutError:
            if sent:
                raise OutcomeUnknown(transaction_id=ctx.txn) from None
            raise Unavailable("the upstream MCP server did not answer; nothing was executed",
                              transaction_id=ctx.txn) from None  # fmt: skip
        except Exception as exc:
            raise _failure(exc, sent, ctx.txn) from None
        return _result(result, ctx.txn)

    def check_pin(self, tools: Mapping[str, Any], target: str) -> None:
        found = tools.get(self.tool)
        if found is None:
            raise CatalogDrift(target, self.tool, "removed")
        if self.pin is not None and mcp_pin(found) != self.pin:
            raise CatalogDrift(target, self.tool, "changed")


class CatalogDrift(Unavailable):
    """An upstream tool that no longer matches its pin: refused until re-imported. Its
    ``facts`` (``drift``: target, tool, what happened) feed the ``catalog.drift`` audit
    event and metric."""

    def __init__(self, target: str, tool: str, change: str) -> None:
        reason = "is no longer offered" if change == "removed" else (
            "changed since it was reviewed")  # fmt: skip
        super().__init__(f"the upstream tool {tool!r} {reason}: "
                         "re-import the catalog and review it")  # fmt: skip
        log.warning("catalog.drift: %s.%s %s upstream", target, tool, change)
        self.facts["drift"] = {"target": target, "tool": tool, "change": change}


def _failure(exc: BaseException, sent: bool, txn: str) -> HandshakeError:
    """What a failed session means: ours (drift), the server gone (``unavailable``), or,
    once the call was sent, an answer the SDK refused (e.g. against the tool's own
    output schema: ``target_error``)."""
    known = _handshake_error(exc)
    if known is not None:
        return known
    log.warning("upstream MCP server failed: %s", type(exc).__name__)
    if sent and _off_schema(exc):  # the SDK's message quotes the content: not passed on
        return TargetError("the upstream's structuredContent does not match the tool's own "
                           "outputSchema", transaction_id=txn)  # fmt: skip
    if sent and not _closed(exc):
        return TargetError("the upstream answered something invalid", transaction_id=txn)
    return Unavailable("the upstream MCP server failed or stopped", transaction_id=txn)


def _off_schema(exc: BaseException) -> bool:
    """The SDK client's check of a result against the tool's declared output schema
    failed (it raises RuntimeError from jsonschema's ValidationError, or says the
    structured content is missing)."""
    from jsonschema import ValidationError

    if isinstance(exc, BaseExceptionGroup):
        return any(_off_schema(e) for e in exc.exceptions)
    missing = "did not return structured content" in str(exc)
    return isinstance(exc, RuntimeError) and (isinstance(exc.__cause__, ValidationError) or missing)


def _closed(exc: BaseException) -> bool:
    from mcp.shared.exceptions import MCPError
    from mcp_types import CONNECTION_CLOSED

    if isinstance(exc, BaseExceptionGroup):
        return any(_closed(e) for e in exc.exceptions)
    if isinstance(exc, MCPError):
        return exc.error.code == CONNECTION_CLOSED
    return isinstance(exc, (OSError, EOFError)) or "Closed" in type(exc).__name__


def _result(result: Any, txn: str) -> Any:
    if result.is_error:
        raise TargetError("the upstream tool reported an error", transaction_id=txn)
    if result.structured_content is not None:
        value: Any = result.structured_content
    else:
        texts = [c.text for c in result.content if getattr(c, "type", None) == "text"]
        value = texts[0] if len(texts) == 1 else texts
    if len(msgspec.json.encode(value)) > MAX_RESULT_BYTES:
        raise TargetError(f"the upstream answered more than {MAX_RESULT_BYTES} bytes",
                          transaction_id=txn)  # fmt: skip
    return value
