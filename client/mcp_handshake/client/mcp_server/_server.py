"""The MCP server itself (the SDK's low-level ``Server``) and its two transports."""

from __future__ import annotations

import contextlib
import logging
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import mcp_types as types
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel import Server
from mcp.server.stdio import stdio_server
from mcp.shared.exceptions import MCPError
from mcp_types import INTERNAL_ERROR

from mcp_handshake.client import HandshakeError

from ._calls import Calls

__all__ = ["build_server", "run_http", "run_stdio"]

log = logging.getLogger("mcp_handshake.mcp")

LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})

INSTRUCTIONS = (
    "Each tool runs one operation through the mcp-handshake mediator: it checks who you "
    "are and what policy allows, then runs exactly that operation with credentials you "
    "never see, and returns a signed receipt. Tools that need approval may answer "
    "'pending approval' with a transaction id: follow up with handshake_wait or "
    "handshake_status."
)


def _version() -> str:
    try:
        return version("mcp-handshake")
    except PackageNotFoundError:
        return "0"


def build_server(calls: Calls) -> Server[Any]:
    """An MCP server offering the session's mediated tools."""

    async def list_tools(
        ctx: ServerRequestContext[Any], params: types.PaginatedRequestParams | None
    ) -> types.ListToolsResult:
        try:
            return types.ListToolsResult(tools=await calls.tools())
        except HandshakeError as exc:
            raise MCPError(
                INTERNAL_ERROR, f"{exc.code}: {exc.message}", {"code": exc.code}
            ) from None
        except Exception:
            log.exception("listing the tools failed")
            raise MCPError(
                INTERNAL_ERROR, "internal: the MCP server failed to list tools"
            ) from None

    async def call_tool(
        ctx: ServerRequestContext[Any], params: types.CallToolRequestParams
    ) -> types.CallToolResult:
        async def progress(done: float, total: float | None, message: str | None) -> None:
            # A host that went away must not fail the call itself.
            with contextlib.suppress(Exception):
                await ctx.session.report_progress(done, total, message)

        return await calls.call(params.name, dict(params.arguments or {}), progress)

    return Server(
        "mcp-handshake",
        version=_version(),
        instructions=INSTRUCTIONS,
        on_list_tools=list_tools,
        on_call_tool=call_tool,
    )


async def run_stdio(server: Server[Any]) -> None:
    """Serve one host over stdin/stdout until it closes them."""
    async with stdio_server() as (read, write):
        await server.run(read, write, server.create_initialization_options())


async def run_http(server: Server[Any], host: str, port: int) -> None:
    """Serve streamable HTTP at ``http://<host>:<port>/mcp`` until SIGINT/SIGTERM."""
    import uvicorn

    if host not in LOOPBACK:
        # The endpoint has no authentication of its own: whoever reaches it acts with
        # this session.
        log.warning("listening on %s: anyone who can reach it acts with this session", host)
    app = server.streamable_http_app(host=host)
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="on")
    log.warning("MCP server listening on http://%s:%d/mcp", host, port)
    await uvicorn.Server(config).serve()
