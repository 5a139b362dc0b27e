"""What the gateway's HTTP server does before and around every route.

- :class:`HeaderTimeoutProtocol`: uvicorn's h11 protocol with a deadline for a
  request's headers. A connection that opens (or, between requests, starts
  sending) and has not finished its headers within ``header_timeout_s`` is
  closed, so half-open connections cannot pile up (uvicorn has no such timer
  of its own; its keep-alive timer stops at the first byte).
- :class:`Hardened`: a request with both ``Transfer-Encoding`` and
  ``Content-Length`` is refused (``400``; RFC 9112 section 6.3 calls it a
  smuggling attempt), and every response of the protocol's routes carries
  ``Cache-Control: no-store`` on ``/v1/*`` and ``/mcp`` (grants hold a token, replies a
  receipt and results).
- :class:`Contain`: an unexpected exception becomes ``internal`` with no detail.
"""

from __future__ import annotations

import asyncio
import logging

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

from mcp_handshake.services.gateway.errors import error_response
from mcp_handshake.shared.errors import BadRequest, InternalError

log = logging.getLogger(__name__)

__all__ = ["HEADER_TIMEOUT_S", "Contain", "Hardened", "HeaderTimeoutProtocol", "protocol_factory"]

#: How long a request's headers may take to arrive, by default.
HEADER_TIMEOUT_S = 5.0


class HeaderTimeoutProtocol(H11Protocol):
    """h11 with a header deadline: armed when a connection opens and whenever bytes of a
    new request arrive, disarmed once the request's headers are complete."""

    header_timeout_s = HEADER_TIMEOUT_S

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._deadline: asyncio.TimerHandle | None = None
        self._arm()

    def _arm(self) -> None:
        if self._deadline is None:
            self._deadline = self.loop.call_later(self.header_timeout_s, self._expired)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _between_requests(self) -> bool:
        return self.cycle is None or self.cycle.response_complete

    def _expired(self) -> None:
        self._deadline = None
        if self._between_requests():
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        if self._between_requests():
            self._arm()
        before = self.cycle
        super().data_received(data)
        if self.cycle is not before:  # a request's headers are complete
            self._disarm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)


def protocol_factory(header_timeout_s: float) -> type[HeaderTimeoutProtocol]:
    """The protocol class for ``uvicorn.Config(http=...)``, with this header deadline."""
    return type("GatewayProtocol", (HeaderTimeoutProtocol,), {"header_timeout_s": header_timeout_s})


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
