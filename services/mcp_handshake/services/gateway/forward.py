"""Forwarding one HTTP request to NATS: the body (size-checked), the protocol's headers.

Request bodies travel to the workers byte for byte, so decoding, validation and
their errors are the workers', exactly as over NATS. Headers travel only where
the protocol names them: the session (``Bearer``, or the ``DPoP`` scheme of a
DPoP-bound session, sent on as ``Bearer``), the transaction token, a proof, and
W3C trace context.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TypeVar

import msgspec
from nats.aio.client import Client as NATS
from nats.errors import Error as NatsError
from starlette.requests import Request

from mcp_handshake.client.mcp_server._http_guard import read_body as read_body_within
from mcp_handshake.services.core.dpop import GatewayKey, bearer_token
from mcp_handshake.services.gateway.errors import RequestTimeout
from mcp_handshake.services.gateway.nonce import NonceIssuer
from mcp_handshake.services.gateway.stats import HttpRoute
from mcp_handshake.shared import protocol
from mcp_handshake.shared.errors import (
    BadRequest,
    HandshakeError,
    InternalError,
    Unavailable,
)
from mcp_handshake.shared.protocol import AUTHORIZATION_HEADER
from mcp_handshake.shared.subjects import Subjects

__all__ = ["TRACE_HEADERS", "Gateway", "GatewayOptions", "nats_headers", "read_body"]

log = logging.getLogger(__name__)

R = TypeVar("R")

TRACE_HEADERS = ("traceparent", "tracestate")
_AUTH_HEADER_LIMIT = 16384


@dataclass(frozen=True, slots=True)
class GatewayOptions:
    """How one gateway serves HTTP."""

    host: str = "127.0.0.1"
    port: int = 8080
    #: The URL agents reach this gateway at (``https://gw.example``): the ``htu`` of DPoP
    #: proofs is this plus the path, never from the request's Host or X-Forwarded-*.
    #: A loopback gateway started without one uses its own address; any other refuses to
    #: start. Without it (``None``), DPoP proofs are refused here.
    public_url: str | None = None
    #: The key shared with execute workers: it tags the ``htu`` forwarded with a proof.
    gateway_key: GatewayKey | None = None
    #: How long a request's headers may take (then the connection is closed).
    header_timeout_s: float = 5.0
    #: Open connections at most; past it, requests are answered 503.
    max_connections: int = 1000
    #: Largest request body (bytes); larger is ``payload_too_large`` (413).
    max_body: int = 65536
    #: How long to wait for a worker's reply (execute: then ``outcome_unknown``).
    timeout_s: float = 15.0
    #: How long a request body may take to arrive (then ``request_timeout``, 408).
    body_timeout_s: float = 10.0
    #: Origins allowed by CORS; none (CORS off) by default.
    cors_origins: tuple[str, ...] = ()
    #: DPoP server nonces, when configured.
    nonces: NonceIssuer | None = None
    #: How long a restricted call at ``/mcp`` waits for approval (with progress) before
    #: it answers "pending approval" and is kept for ``handshake_wait``; also the wait
    #: ``handshake_wait`` takes by default.
    mcp_approval_wait_s: float = 50.0


class Gateway:
    def __init__(
        self,
        nc: NATS,
        subjects: Subjects,
        options: GatewayOptions,
        routes: dict[str, HttpRoute] | None = None,
    ) -> None:
        self.nc = nc
        self.subjects = subjects
        self.options = options
        #: Request counts per route, by path (``app.http_routes()``).
        self.routes = routes if routes is not None else {}

    async def forward(
        self,
        subject: str,
        data: bytes,
        reply_type: type[R],
        headers: dict[str, str],
        *,
        timeout: float | None = None,
        timeout_error: type[HandshakeError] = Unavailable,
    ) -> R:
        """One NATS request; its error reply (or a failure to get one) raised."""
        try:
            return await protocol.request(
                self.nc,
                subject,
                data,
                reply_type,
                headers=headers,
                timeout=timeout or self.options.timeout_s,
                timeout_error=timeout_error,
            )
        except (NatsError, OSError):
            log.warning("NATS request failed", exc_info=True)
            raise Unavailable("the mediator is unreachable") from None
        except msgspec.ValidationError:
            log.error("unexpected reply on %s", subject)
            raise InternalError() from None


async def read_body(request: Request, limit: int, timeout: float) -> bytes:
    """The body, refused (``payload_too_large``) as soon as it is over ``limit``, or
    (``request_timeout``) when it has not all arrived within ``timeout`` seconds."""
    try:
        return await read_body_within(request, limit, timeout)
    except TimeoutError:
        raise RequestTimeout() from None


def _printable(value: str) -> bool:
    return value.isascii() and value.isprintable()


def nats_headers(request: Request, *names: str) -> dict[str, str]:
    """The protocol's headers of ``request``, for NATS. The session travels as ``Bearer``
    whichever scheme (``Bearer`` or ``DPoP``) the agent used."""
    out: dict[str, str] = {}
    auth = request.headers.get(AUTHORIZATION_HEADER)
    if auth is not None:
        if len(auth) > _AUTH_HEADER_LIMIT:
            raise BadRequest("Authorization header too large")
        token = bearer_token(auth)
        out[AUTHORIZATION_HEADER] = f"Bearer {token}" if token else auth
    for name in (*names, *TRACE_HEADERS):
        value = request.headers.get(name)
        if value is not None:
            out[name] = value
    if not all(_printable(v) for v in out.values()):
        raise BadRequest("header values must be printable ASCII")
    return out
