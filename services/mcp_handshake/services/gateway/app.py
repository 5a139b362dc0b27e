"""The gateway's HTTP routes: each is the NATS request of the same name (``forward``).

A status code is the error table's; a grant still pending approval is 202.
Nothing from a request is logged.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import msgspec
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from mcp_handshake.services.core.dpop import DPOP_HEADER
from mcp_handshake.services.gateway.approvals import decide, list_approvals
from mcp_handshake.services.gateway.batch import authorize_batch, execute_batch
from mcp_handshake.services.gateway.dpop import nonce_header, vouch
from mcp_handshake.services.gateway.errors import (
    JSON,
    MethodNotAllowed,
    NotFound,
    error_response,
)
from mcp_handshake.services.gateway.forward import (
    TRACE_HEADERS,
    Gateway,
    GatewayOptions,
    nats_headers,
    read_body,
)
from mcp_handshake.services.gateway.hardening import Contain, Hardened
from mcp_handshake.services.gateway.openapi import docs_page, openapi_document
from mcp_handshake.services.gateway.stats import HttpRoute, counted
from mcp_handshake.shared.errors import BadRequest, HandshakeError, OutcomeUnknown
from mcp_handshake.shared.protocol import AUTHORIZATION_HEADER, PROOF_HEADER, TOKEN_HEADER
from mcp_handshake.shared.wire import ExecuteReply, Grant, Jwks, StatusReply, ToolsReply

__all__ = ["Gateway", "GatewayOptions", "create_app", "http_routes"]

#: The longest ``wait`` a status request waits (the status subject clamps to it).
MAX_WAIT_S = 30.0
#: Time allowed past a status request's wait for the reply to arrive.
WAIT_MARGIN_S = 5.0


def _json(
    body: msgspec.Struct, status: int = 200, headers: dict[str, str] | None = None
) -> Response:
    return Response(msgspec.json.encode(body), status_code=status, media_type=JSON, headers=headers)


def _gateway(request: Request) -> Gateway:
    gw: Gateway = request.app.state.gateway
    return gw


async def authorize(request: Request) -> Response:
    gw = _gateway(request)
    data = await read_body(request, gw.options.max_body, gw.options.body_timeout_s)
    grant = await gw.forward(gw.subjects.authorize, data, Grant, nats_headers(request))
    return _json(grant, 202 if grant.status == "pending_approval" else 200)


async def execute(request: Request) -> Response:
    gw = _gateway(request)
    data = await read_body(request, gw.options.max_body, gw.options.body_timeout_s)
    headers = nats_headers(request, TOKEN_HEADER, PROOF_HEADER, DPOP_HEADER)
    extra = nonce_header(gw.options)
    try:
        vouch(request, headers, gw.options)
        reply = await gw.forward(
            gw.subjects.execute, data, ExecuteReply, headers, timeout_error=OutcomeUnknown
        )
    except HandshakeError as exc:
        return error_response(exc, extra)
    return _json(reply, headers=extra)


async def reconcile(request: Request) -> Response:
    """Settle an ``outcome_unknown`` transaction (protocol.md, "reconcile"): the session
    and, where the tier needs one, a ``Handshake-Proof`` over ``{txn, tool:
    "handshake.reconcile", ph: "reconcile"}`` (no transaction token)."""
    gw = _gateway(request)
    data = await read_body(request, gw.options.max_body, gw.options.body_timeout_s)
    headers = nats_headers(request, PROOF_HEADER, DPOP_HEADER)
    if DPOP_HEADER in headers:
        raise BadRequest("reconcile takes a Handshake-Proof header, not DPoP")
    reply = await gw.forward(
        gw.subjects.reconcile, data, ExecuteReply, headers, timeout_error=OutcomeUnknown
    )
    return _json(reply)


async def tools(request: Request) -> Response:
    gw = _gateway(request)
    reply = await gw.forward(gw.subjects.tools, b"{}", ToolsReply, nats_headers(request))
    return _json(reply)


def _wait(raw: str | None) -> float | None:
    if raw is None:
        return None
    try:
        wait = float(raw)
    except ValueError:
        raise BadRequest("wait must be a number of seconds") from None
    if not math.isfinite(wait) or wait < 0:
        raise BadRequest("wait must be a number of seconds, at least 0")
    return min(wait, MAX_WAIT_S)


async def status(request: Request) -> Response:
    gw = _gateway(request)
    wait = _wait(request.query_params.get("wait"))
    body: dict[str, Any] = {"transaction_id": request.path_params["txn"]}
    if wait is not None:
        body["wait_s"] = wait
    timeout = max(gw.options.timeout_s, (wait or 0) + WAIT_MARGIN_S)
    reply = await gw.forward(
        gw.subjects.status,
        msgspec.json.encode(body),
        StatusReply,
        nats_headers(request),
        timeout=timeout,
    )
    return _json(reply)


async def keys(request: Request) -> Response:
    gw = _gateway(request)
    return _json(await gw.forward(gw.subjects.keys, b"{}", Jwks, nats_headers(request)))


async def openapi(request: Request) -> Response:
    return Response(openapi_document(_gateway(request).options.public_url), media_type=JSON)


async def docs(request: Request) -> Response:
    return Response(
        docs_page(),
        media_type="text/html; charset=utf-8",
        headers={
            "Content-Security-Policy": "default-src 'none'; "
            "style-src 'unsafe-inline'; connect-src 'self'; "
            "script-src 'unsafe-inline'; frame-ancestors 'none'",
            "X-Frame-Options": "DENY",
        },
    )


async def _on_protocol_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HandshakeError)
    return error_response(exc)


async def _on_http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 405:
        return error_response(MethodNotAllowed(), dict(exc.headers or {}))
    if exc.status_code == 404:
        return error_response(NotFound())
    return error_response(BadRequest())


#: The protocol's routes: path -> (method, handler); each is counted for discovery.
_API = {
    "/v1/authorize": ("POST", authorize),
    "/v1/execute": ("POST", execute),
    "/v1/authorize/batch": ("POST", authorize_batch),
    "/v1/execute/batch": ("POST", execute_batch),
    "/v1/reconcile": ("POST", reconcile),
    "/v1/tools": ("GET", tools),
    "/v1/status/{txn}": ("GET", status),
    "/v1/keys": ("GET", keys),
    "/v1/approvals": ("GET", list_approvals),
    "/v1/approvals/{txn}/decide": ("POST", decide),
}


def http_routes() -> dict[str, HttpRoute]:
    """One counter per protocol route, for ``Gateway.routes`` and discovery."""
    return {path: HttpRoute(method, path) for path, (method, _) in _API.items()}


def create_app(gateway: Gateway, mcp: Sequence[BaseRoute] = ()) -> Starlette:
    """The gateway's ASGI app (CORS only for the configured origins); ``mcp``: the routes
    of ``/mcp`` (``mcp_app.open_mcp``)."""
    middleware = [Middleware(Contain), Middleware(Hardened)]
    if gateway.options.cors_origins:
        middleware.append(
            Middleware(
                CORSMiddleware,
                allow_origins=list(gateway.options.cors_origins),
                allow_methods=["GET", "POST"],
                allow_headers=[
                    AUTHORIZATION_HEADER,
                    TOKEN_HEADER,
                    PROOF_HEADER,
                    DPOP_HEADER,
                    "Content-Type",
                    *TRACE_HEADERS,
                ],
                expose_headers=["DPoP-Nonce", "Retry-After", "WWW-Authenticate"],
            )
        )
    gateway.routes = gateway.routes or http_routes()
    routes = [
        Route(path, counted(gateway.routes[path], handler), methods=[method])
        for path, (method, handler) in _API.items()
    ]
    routes += [
        Route("/openapi.json", openapi, methods=["GET"]),
        Route("/docs", docs, methods=["GET"]),
    ]
    app = Starlette(
        routes=[*routes, *mcp],
        middleware=middleware,
        exception_handlers={
            HandshakeError: _on_protocol_error,
            HTTPException: _on_http_error,
        },
    )
    app.state.gateway = gateway
    return app
