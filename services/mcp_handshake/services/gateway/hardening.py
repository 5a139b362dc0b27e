"""What the gateway's HTTP server does before and around every route.

- :class:`HeaderTimeoutProtocol`: uvicorn's h11 protocol with a deadline for a
  request's headers (shared with the local MCP server: ``client.mcp_server._http_guard``).
- :class:`Hardened`: a request with both ``Transfer-Encoding`` and
  ``Content-Length`` is refused (``400``; RFC 9112 section 6.3 calls it a
  smuggling attempt), and every response of the protocol's routes carries
  ``Cache-Control: no-store`` on ``/v1/*`` and ``/mcp`` (grants hold a token, replies a
  receipt and results).
- :class:`Contain`: an unexpected exception becomes ``internal`` with no detail.
"""

from __future__ import annotations

import logging

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mcp_handshake.client.mcp_server._http_guard import (
    HEADER_TIMEOUT_S,
    HeaderTimeoutProtocol,
    protocol_factory,
)
from mcp_handshake.services.gateway.errors import error_response
from mcp_handshake.shared.errors import BadRequest, InternalError

log = logging.getLogger(__name__)

__all__ = ["HEADER_TIMEOUT_S", "Contain", "Hardened", "HeaderTimeoutProtocol", "protocol_factory"]


class Hardened:
    """TE together with CL refused; ``Cache-Control: no-store`` on the protocol's routes."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        names = {name.lower() for name, _ in scope["headers"]}
        if b"transfer-encoding" in names and b"content-length" in names:
            refused = error_response(
                BadRequest("a request may not carry both Transfer-Encoding and Content-Length"),
                {"Connection": "close"},
            )
            await refused(scope, receive, send)
            return
        if not str(scope.get("path", "")).startswith(("/v1/", "/mcp")):
            await self.app(scope, receive, send)
            return

        async def no_store(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message)["Cache-Control"] = "no-store"
            await send(message)

        await self.app(scope, receive, no_store)


class Contain:
    """An unexpected exception becomes ``internal`` with no detail (the traceback goes
    to the log, once), instead of a plain-text 500 and a re-raise into the server."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = False

        async def tracked(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracked)
        except Exception:
            log.exception("unhandled error in the gateway")
            if started or scope["type"] != "http":
                raise
            await error_response(InternalError())(scope, receive, send)
