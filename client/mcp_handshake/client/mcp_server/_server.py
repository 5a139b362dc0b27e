"""The MCP server itself (the SDK's low-level ``Server``) and its two transports."""

from __future__ import annotations

import contextlib
import hmac
import logging
import os
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import mcp_types as types
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel import Server
from mcp.server.stdio import stdio_server
from mcp.server.transport_security import TransportSecuritySettings
from mcp.shared.exceptions import MCPError
from mcp_types import INTERNAL_ERROR
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from mcp_handshake.client import HandshakeError

from ._calls import Calls
from ._http_guard import BodyGuard, protocol_factory

__all__ = ["HttpLimits", "build_server", "read_bearer_secret", "run_http", "run_stdio"]

log = logging.getLogger("mcp_handshake.mcp")

LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})
#: The shortest bearer secret the HTTP transport accepts.
MIN_SECRET_CHARS = 32

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


def read_bearer_secret(path: Path) -> str:
    """The HTTP transport's bearer secret: a file of this user's, readable by its owner
    only (0600 or stricter), of at least 32 characters; ``ValueError`` otherwise."""
    try:
        info = path.stat()
        value = path.read_text().strip()
    except OSError as exc:
        raise ValueError(f"{path}: cannot read the bearer secret ({exc.strerror})") from None
    if info.st_uid != os.getuid() or info.st_mode & 0o077:
        raise ValueError(f"{path}: the bearer secret must be this user's, mode 0600 or stricter")
    if len(value) < MIN_SECRET_CHARS:
        raise ValueError(f"{path}: the bearer secret needs at least {MIN_SECRET_CHARS} characters")
    return value


@dataclass(frozen=True, slots=True)
class HttpLimits:
    """How much, and how slowly, the HTTP transport reads of a request."""

    #: Largest request body (bytes): the protocol's largest params plus JSON-RPC framing.
    max_body: int = (1 << 20) + 16384
    #: How long a request body may take to arrive (then ``408``).
    body_timeout_s: float = 10.0
    #: How long a request's headers may take to arrive (then the connection is closed).
    header_timeout_s: float = 5.0


class _BearerSecret:
    """Every request must carry ``Authorization: Bearer <secret>`` (compared in constant
    time); anything else is ``401`` before the MCP SDK sees it."""

    def __init__(self, app: ASGIApp, secret: str) -> None:
        self.app, self._secret = app, secret.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            given = dict(scope["headers"]).get(b"authorization", b"")
            scheme, _, token = given.partition(b" ")
            if scheme.lower() != b"bearer" or not hmac.compare_digest(token.strip(), self._secret):
                body = b'{"error": "invalid_token", "error_description": "bearer secret required"}'
                await Response(body, 401, {"WWW-Authenticate": "Bearer"},
                               media_type="application/json")(scope, receive, send)  # fmt: skip
                return
        await self.app(scope, receive, send)


def transport_security(host: str, allowed_hosts: tuple[str, ...]) -> TransportSecuritySettings:
    """Host and Origin checks (DNS rebinding): loopback names, or exactly ``allowed_hosts``;
    a non-loopback address without any is refused."""
    if host not in LOOPBACK and not allowed_hosts:
        raise ValueError(f"listening on {host} needs --allowed-host (the Host names clients use)")
    hosts = [*allowed_hosts, "127.0.0.1:*", "localhost:*", "[::1]:*"]
    origins = [f"{scheme}://{h}" for h in hosts for scheme in ("http", "https")]
    return TransportSecuritySettings(allowed_hosts=hosts, allowed_origins=origins)


async def run_http(
    server: Server[Any],
    host: str,
    port: int,
    secret: str,
    allowed_hosts: tuple[str, ...] = (),
    limits: HttpLimits = HttpLimits(),
) -> None:
    """Serve streamable HTTP at ``http://<host>:<port>/mcp`` until SIGINT/SIGTERM, to
    clients that send ``Authorization: Bearer <secret>`` with an allowed Host: headers
    within ``limits.header_timeout_s``, then the body read under ``limits`` and refused,
    quoting nothing, unless it is one JSON-RPC message (``_http_guard``)."""
    import uvicorn

    security = transport_security(host, allowed_hosts)
    sdk = server.streamable_http_app(host=host, transport_security=security)
    app = _BearerSecret(BodyGuard(sdk, limits.max_body, limits.body_timeout_s), secret)
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="on",
                            http=protocol_factory(limits.header_timeout_s))  # fmt: skip
    log.warning("MCP server listening on http://%s:%d/mcp (bearer secret required)", host, port)
    await uvicorn.Server(config).serve()
