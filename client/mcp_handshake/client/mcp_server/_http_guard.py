"""What an HTTP MCP endpoint does before the MCP SDK sees a request: shared by the local
``mcp --transport http`` server and the gateway's ``/mcp``.

- :class:`HeaderTimeoutProtocol`: uvicorn's h11 protocol with a deadline for a
  request's headers. A connection that opens (or, between requests, starts sending)
  and has not finished its headers within ``header_timeout_s`` is closed, so
  half-open connections cannot pile up (uvicorn has no such timer of its own; its
  keep-alive timer stops at the first byte).
- :func:`read_body`: the body under a size limit and a deadline, so a body trickled
  in cannot hold a connection open.
- :func:`not_one_message`: the ``400`` for a body that is not one JSON-RPC message,
  quoting nothing of it (the SDK's own refusal quotes the body, arguments and all).
- :class:`BodyGuard`: the last two as ASGI middleware, for the local server.
"""

from __future__ import annotations

import asyncio
import json

import pydantic_core
from mcp_types import INVALID_REQUEST, PARSE_ERROR, jsonrpc_message_adapter
from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

from mcp_handshake.shared.errors import PayloadTooLarge

__all__ = [
    "HEADER_TIMEOUT_S",
    "BodyGuard",
    "HeaderTimeoutProtocol",
    "not_one_message",
    "protocol_factory",
    "read_body",
    "replay",
]

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
    return type("GuardedProtocol", (HeaderTimeoutProtocol,), {"header_timeout_s": header_timeout_s})


async def read_body(request: Request, limit: int, timeout: float) -> bytes:
    """The body, refused (``PayloadTooLarge``) as soon as it is over ``limit``, or
    (``TimeoutError``) when it has not all arrived within ``timeout`` seconds."""
    length = request.headers.get("content-length", "")
    if length.isascii() and length.isdigit() and int(length) > limit:
        raise PayloadTooLarge(f"request body over {limit} bytes")
    chunks, size = [], 0
    async with asyncio.timeout(timeout):
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise PayloadTooLarge(f"request body over {limit} bytes")
            chunks.append(chunk)
    return b"".join(chunks)


def not_one_message(body: bytes) -> Response | None:
    """A ``400`` JSON-RPC error for a body that is not one JSON-RPC message, else ``None``."""
    try:
        raw = pydantic_core.from_json(body)
    except ValueError:
        code, message = PARSE_ERROR, "Parse error: the body is not JSON"
    else:
        try:
            jsonrpc_message_adapter.validate_python(raw, by_name=False)
            return None
        except ValidationError:
            code, message = INVALID_REQUEST, "Invalid Request: not one JSON-RPC 2.0 message"
    error = {"jsonrpc": "2.0", "id": None, "error": {"code": code, "message": message}}
    return Response(json.dumps(error), 400, {"Cache-Control": "no-store"},
                    media_type="application/json")  # fmt: skip


def replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that gives the app ``body`` (already read), then what comes after."""
    sent = False

    async def again() -> Message:
        nonlocal sent
        if sent:
            return await receive()  # after the body: the disconnect, when it comes
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return again


def _refusal(status: int, code: str, message: str) -> Response:
    body = {"error": {"code": code, "message": message}}
    return Response(json.dumps(body), status, {"Cache-Control": "no-store"},
                    media_type="application/json")  # fmt: skip


class BodyGuard:
    """A POST's body read here under ``max_body`` and ``body_timeout_s`` (``413``,
    ``408``), and refused (``400``, quoting nothing) unless it is one JSON-RPC message."""

    def __init__(self, app: ASGIApp, max_body: int, body_timeout_s: float) -> None:
        self.app, self.max_body, self.body_timeout_s = app, max_body, body_timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        try:
            body = await read_body(Request(scope, receive), self.max_body, self.body_timeout_s)
        except PayloadTooLarge as exc:
            await _refusal(413, exc.code, exc.message)(scope, receive, send)
            return
        except TimeoutError:
            message = "the request body did not arrive in time"
            await _refusal(408, "request_timeout", message)(scope, receive, send)
            return
        malformed = not_one_message(body) if body else None
        if malformed is not None:
            await malformed(scope, receive, send)
            return
        await self.app(scope, replay(body, receive), send)
