"""MCP at ``/mcp`` on the gateway: the official SDK's server behind :class:`McpGuard`.

Streamable HTTP, stateless (no ``Mcp-Session-Id`` to pin a host to a replica): the
SDK serves both eras, 2026-07-28 requests (``server/discover``, ``Mcp-Method``
headers, no session) and 2025-11-25 ones (``initialize``, each POST on its own).
Each request is served as the user its bearer session names (``mcp_auth``), each
tool call is a full handshake (``mcp_calls``). RFC 9728 metadata is at
``/.well-known/oauth-protected-resource`` and ``/.well-known/oauth-protected-resource/mcp``.
See ``docs/mcp.md`` ("Remote hosts: the gateway's /mcp").
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import mcp_types as types
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel import Server
from mcp.server.streamable_http_manager import StreamableHTTPASGIApp, StreamableHTTPSessionManager
from mcp.shared.exceptions import MCPError
from mcp_types import INTERNAL_ERROR
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from mcp_handshake.client.mcp_server._server import INSTRUCTIONS
from mcp_handshake.services.core.config import load_config
from mcp_handshake.services.core.sessions import SessionVerifier
from mcp_handshake.services.gateway.forward import Gateway
from mcp_handshake.services.gateway.mcp_auth import (
    CALLER_KEY,
    McpCaller,
    McpGuard,
    McpResource,
    metadata_document,
)
from mcp_handshake.services.gateway.mcp_calls import GatewayCalls
from mcp_handshake.services.runtime.build import VERSION
from mcp_handshake.shared.errors import HandshakeError
from mcp_handshake.shared.settings import Settings

__all__ = ["McpEndpoint", "build_mcp_server", "open_mcp"]

log = logging.getLogger(__name__)

#: The largest MCP request body: the protocol's limit plus room for JSON-RPC framing.
_FRAMING = 16384


def _caller(ctx: ServerRequestContext[Any]) -> McpCaller:
    request = ctx.request
    who = request.scope.get(CALLER_KEY) if isinstance(request, Request) else None
    if not isinstance(who, McpCaller):  # the guard always sets it: never serve anonymously
        raise MCPError(INTERNAL_ERROR, "unauthenticated: no verified session on this request")
    return who


def build_mcp_server(calls: GatewayCalls) -> Server[Any]:
    """The SDK's low-level server, each handler acting as the request's own user."""

    async def list_tools(
        ctx: ServerRequestContext[Any], params: types.PaginatedRequestParams | None
    ) -> types.ListToolsResult:
        try:
            return types.ListToolsResult(tools=await calls.tools(_caller(ctx)))
        except HandshakeError as exc:
            raise MCPError(INTERNAL_ERROR, f"{exc.code}: {exc.message}",
                           {"code": exc.code}) from None  # fmt: skip

    async def call_tool(
        ctx: ServerRequestContext[Any], params: types.CallToolRequestParams
    ) -> types.CallToolResult:
        async def progress(done: float, total: float | None, message: str | None) -> None:
            with contextlib.suppress(Exception):  # a host that went away fails nothing
                await ctx.session.report_progress(done, total, message)

        return await calls.call(_caller(ctx), params.name, dict(params.arguments or {}), progress)

    return Server(
        "mcp-handshake-gateway",
        version=VERSION,
        instructions=INSTRUCTIONS,
        on_list_tools=list_tools,
        on_call_tool=call_tool,
    )


@dataclass
class McpEndpoint:
    """``/mcp`` and its metadata routes, and the job that runs the SDK's manager."""

    resource: McpResource
    routes: list[BaseRoute]
    run: Callable[[], Coroutine[Any, Any, None]]


async def open_mcp(settings: Settings, gateway: Gateway, base_url: str) -> McpEndpoint:
    """``/mcp`` for the gateway reached at ``base_url``: sessions verified as the workers
    verify them (the configuration's ``[session]``), restricted calls waiting for approval
    as long as the gateway's ``mcp_approval_wait_s``."""
    cfg = load_config(settings.config_path)
    sessions = await SessionVerifier.create(cfg.session, cfg.path.parent)
    opts = gateway.options
    resource = McpResource.at(
        base_url, cfg.session.issuer, opts.cors_origins, tuple(cfg.session.mcp_scopes)
    )
    if resource.url not in cfg.session.resources:
        log.warning("[session] resources does not list %s: only sessions for the audience "
                    "%r are accepted at /mcp", resource.url, cfg.session.audience)  # fmt: skip
    manager = StreamableHTTPSessionManager(
        build_mcp_server(GatewayCalls(gateway, opts.mcp_approval_wait_s)),
        stateless=True,
        max_request_body_size=opts.max_body + _FRAMING,
    )
    guard = McpGuard(StreamableHTTPASGIApp(manager), resource, sessions, opts.nonces,
                     opts.max_body + _FRAMING, opts.body_timeout_s, opts.gateway_key)  # fmt: skip
    document = metadata_document(resource)

    async def metadata(request: Request) -> Response:
        return Response(document, media_type="application/json",
                        headers={"Access-Control-Allow-Origin": "*"})  # fmt: skip

    async def run() -> None:
        async with manager.run():
            await asyncio.Event().wait()  # until the worker stops (cancelled)

    routes: list[BaseRoute] = [
        # POST only: no server-initiated stream (GET) and no session to end (DELETE): 405.
        Route("/mcp", guard, methods=["POST"]),
        Route("/.well-known/oauth-protected-resource", metadata, methods=["GET"]),
        Route("/.well-known/oauth-protected-resource/mcp", metadata, methods=["GET"]),
    ]
    log.info("MCP at %s (authorization server %s)", resource.url, resource.issuer)
    return McpEndpoint(resource, routes, run)
