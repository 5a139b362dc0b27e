"""The OpenAPI 3.1 document of the gateway, generated from the wire Structs.

Schemas come from ``msgspec.json.schema_components`` over the same Structs the
workers decode and encode (JSON Schema 2020-12, which OpenAPI 3.1 uses as is),
so the document cannot drift from the protocol. Every operation lists every
error status the error table can give it, with the protocol's error body.
"""

from __future__ import annotations

import functools
import json
from importlib import resources
from typing import Any

import msgspec

from mcp_handshake.services.core.dpop import DPOP_HEADER
from mcp_handshake.services.runtime.build import VERSION
from mcp_handshake.shared.protocol import PROOF_HEADER, TOKEN_HEADER
from mcp_handshake.shared.wire import (
    AuthorizeRequest,
    ErrorReply,
    ExecuteReply,
    ExecuteRequest,
    Grant,
    Jwks,
    ReconcileRequest,
    StatusReply,
    ToolsReply,
)

__all__ = ["ERROR_STATUSES", "docs_page", "openapi_document"]

_REF = "#/components/schemas/{name}"
#: Protocol errors each operation can answer, beyond those every operation can.
ERROR_STATUSES = {
    "authorize": (400, 401, 403, 404, 408, 413, 422, 429, 500, 503),
    "execute": (400, 401, 403, 408, 409, 413, 422, 429, 500, 502, 503, 504),
    "reconcile": (400, 401, 403, 408, 409, 413, 422, 429, 500, 502, 503, 504),
    "tools": (400, 401, 429, 500, 503),
    "status": (400, 401, 404, 409, 429, 500, 503),
    "keys": (400, 500, 503),
}
_DESCRIPTIONS = {
    400: "bad_request", 401: "unauthenticated, or use_dpop_nonce (execute)",
    403: "forbidden or approval_denied", 404: "unknown_tool, or no such endpoint",
    405: "method_not_allowed", 408: "request_timeout (the body came too slowly)",
    409: "invalid_transaction or approval_pending (Retry-After)",
    413: "payload_too_large", 422: "invalid_params or validation_failed",
    429: "rate_limited (Retry-After)", 500: "internal", 502: "target_error",
    503: "unavailable (Retry-After)", 504: "outcome_unknown",
}  # fmt: skip


def _ref(struct: type[msgspec.Struct]) -> dict[str, str]:
    return {"$ref": _REF.format(name=struct.__name__)}


def _json_body(struct: type[msgspec.Struct], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ref(struct)}}}


def _header(name: str, description: str, *, required: bool = False) -> dict[str, Any]:
    return {"name": name, "in": "header", "required": required, "description": description,
            "schema": {"type": "string"}}  # fmt: skip


def _operation(op: str, summary: str, ok: dict[int, dict[str, Any]], **kw: Any) -> dict[str, Any]:
    responses: dict[str, Any] = {str(code): body for code, body in ok.items()}
    for code in (*ERROR_STATUSES[op], 405):
        responses[str(code)] = _json_body(ErrorReply, _DESCRIPTIONS[code])
    out = {"operationId": op, "summary": summary, "responses": responses, **kw}
    if op != "keys":
        out["security"] = [{"session": []}]
    return out


def _paths() -> dict[str, Any]:
    execute_headers = [
        _header(TOKEN_HEADER, "the transaction token from authorize", required=True),
        _header(DPOP_HEADER, "DPoP proof (RFC 9449) for tiers internal and above"),
        _header(PROOF_HEADER, "a handshake-proof+jwt instead of DPoP"),
    ]
    wait = {"name": "wait", "in": "query", "required": False,
            "description": "seconds to wait while pending_approval (at most 30)",
            "schema": {"type": "number", "minimum": 0}}  # fmt: skip
    txn = {"name": "txn", "in": "path", "required": True,
           "schema": {"type": "string", "minLength": 1, "maxLength": 64}}  # fmt: skip
    return {
        "/v1/authorize": {"post": _operation(
            "authorize", "Phase 1: authorize one exact operation",
            {200: _json_body(Grant, "granted"), 202: _json_body(Grant, "pending_approval")},
            requestBody={"required": True, **_json_body(AuthorizeRequest, "the operation")})},
        "/v1/execute": {"post": _operation(
            "execute", "Phase 2: execute it with the token",
            {200: _json_body(ExecuteReply, "the result and its signed receipt")},
            parameters=execute_headers,
            requestBody={"required": True, **_json_body(ExecuteRequest, "the operation")})},
        "/v1/reconcile": {"post": _operation(
            "reconcile", "Settle a transaction left outcome_unknown (run it again, once)",
            {200: _json_body(ExecuteReply, "the result and its signed receipt")},
            parameters=[_header(PROOF_HEADER,
                        "a handshake-proof+jwt over {txn, tool: handshake.reconcile, "
                        "ph: reconcile}, for tiers internal and above")],
            requestBody={"required": True, **_json_body(ReconcileRequest, "the transaction")})},
        "/v1/tools": {"get": _operation(
            "tools", "The tools this caller may use", {200: _json_body(ToolsReply, "tools")})},
        "/v1/status/{txn}": {"get": _operation(
            "status", "A transaction's status (long poll with wait)",
            {200: _json_body(StatusReply, "status")}, parameters=[txn, wait])},
        "/v1/keys": {"get": _operation(
            "keys", "JWKS of the receipt-signing keys", {200: _json_body(Jwks, "JWKS")})},
    }  # fmt: skip


@functools.cache
def openapi_document() -> bytes:
    """The document, as served at ``/openapi.json``."""
    structs = (AuthorizeRequest, ExecuteRequest, ReconcileRequest, Grant, ExecuteReply,
               ToolsReply, StatusReply, Jwks, ErrorReply)  # fmt: skip
    _, components = msgspec.json.schema_components(structs, ref_template=_REF)
    doc = {
        "openapi": "3.1.0",
        "info": {"title": "mcp-handshake gateway", "version": VERSION,
                 "description": "Protocol v1 over HTTP; see docs/gateway.md."},
        "paths": _paths(),
        "components": {
            "schemas": components,
            "securitySchemes": {"session": {
                "type": "http", "scheme": "bearer", "bearerFormat": "JWT",
                "description": "the session JWT (scheme Bearer, or DPoP for a DPoP-bound "
                               "session)"}},
        },
    }  # fmt: skip
    return json.dumps(doc, indent=1).encode()


@functools.cache
def docs_page() -> bytes:
    """``/docs``: a self-contained page (no external script) that lists the operations
    of ``/openapi.json`` and sends requests to them."""
    return resources.files(__package__).joinpath("docs.html").read_bytes()
