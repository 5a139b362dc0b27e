"""The OpenAPI 3.1 document of the gateway, generated from the wire Structs.

Schemas come from ``msgspec.json.schema_components`` over the same Structs the
workers decode and encode (JSON Schema 2020-12, which OpenAPI 3.1 uses as is),
so the document cannot drift from the protocol. Every operation lists every
error status the error table can give it, with the protocol's error body. Closed
sets are enums (statuses, tiers, error codes); DPoP is a security scheme of its
own; ``servers`` is the gateway's public URL; every operation has examples.
"""

from __future__ import annotations

import functools
import json
from importlib import resources
from typing import Any, get_args

import msgspec

from mcp_handshake.services.core.dpop import DPOP_HEADER
from mcp_handshake.services.gateway.errors import (
    MethodNotAllowed,
    NotFound,
    RequestTimeout,
    UseDpopNonce,
)
from mcp_handshake.services.gateway.examples import ERROR_EXAMPLE, REQUESTS, RESPONSES
from mcp_handshake.services.runtime.build import VERSION
from mcp_handshake.shared.batch import BatchAuthorizeRequest, BatchExecuteRequest
from mcp_handshake.shared.batchreceipt import MerkleExecuteReply
from mcp_handshake.shared.errors import ERRORS_BY_CODE
from mcp_handshake.shared.protocol import PROOF_HEADER, TOKEN_HEADER
from mcp_handshake.shared.wire import (
    ApprovalsReply,
    AuthorizeRequest,
    DecideReply,
    DecideRequest,
    ErrorReply,
    ExecuteReply,
    ExecuteRequest,
    Grant,
    Jwks,
    ReconcileRequest,
    StatusReply,
    Tier,
    ToolsReply,
)

__all__ = ["ERROR_STATUSES", "docs_page", "openapi_document"]

_REF = "#/components/schemas/{name}"
#: Protocol errors each operation can answer, beyond those every operation can.
ERROR_STATUSES = {
    "authorize": (400, 401, 403, 404, 408, 413, 422, 429, 500, 503),
    "execute": (400, 401, 403, 408, 409, 413, 422, 429, 500, 502, 503, 504),
    # A batch's own errors; each operation's are in its result.
    "authorize_batch": (400, 401, 408, 413, 429, 500, 503),
    "execute_batch": (400, 401, 408, 413, 422, 429, 500, 503, 504),
    "reconcile": (400, 401, 403, 408, 409, 413, 422, 429, 500, 502, 503, 504),
    "tools": (400, 401, 429, 500, 503),
    "status": (400, 401, 404, 409, 429, 500, 503),
    "keys": (400, 500, 503),
    "list_approvals": (400, 401, 403, 429, 500, 503),
    "decide": (400, 401, 403, 408, 409, 413, 422, 429, 500, 503),
}
#: Every error code a response may carry: the protocol's, and the gateway's own.
ERROR_CODES = sorted(
    {*ERRORS_BY_CODE, *(e.code for e in (NotFound, MethodNotAllowed, RequestTimeout, UseDpopNonce))}
)
#: Transaction statuses (protocol.md, "Status and approvals").
STATUSES = [
    "granted",
    "pending_approval",
    "approved",
    "denied",
    "expired",
    "executed",
    "invalidated",
    "failed",
    "outcome_unknown",
]
#: (schema, property) -> the closed set its values come from.
_ENUMS: dict[tuple[str, str], list[str]] = {
    ("Grant", "status"): ["granted", "pending_approval"],
    ("StatusReply", "status"): STATUSES,
    ("DecideReply", "status"): ["approved", "denied", "pending_approval"],
    ("ErrorDetail", "code"): ERROR_CODES,
    **{
        (name, "tier"): list(get_args(Tier))
        for name in ("Grant", "ExecuteReply", "ToolInfo", "PendingApproval", "DecideReply")
    },
}
_DESCRIPTIONS = {
    400: "bad_request", 401: "unauthenticated, or use_dpop_nonce (execute)",
    403: "forbidden (no such role, or one's own transaction) or approval_denied",
    404: "unknown_tool, or no such endpoint",
    405: "method_not_allowed", 408: "request_timeout (the body came too slowly)",
    409: "invalid_transaction or approval_pending (Retry-After)",
    413: "payload_too_large",
    422: "invalid_params or validation_failed (a refused proof or decision signature)",
    429: "rate_limited (Retry-After)", 500: "internal", 502: "target_error",
    503: "unavailable (Retry-After)", 504: "outcome_unknown",
}  # fmt: skip


def _json_body(
    struct: type[msgspec.Struct] | str, description: str, example: Any = None
) -> dict[str, Any]:
    name = struct if isinstance(struct, str) else struct.__name__
    media: dict[str, Any] = {"schema": {"$ref": _REF.format(name=name)}}
    if example is not None:
        media["example"] = example
    return {"description": description, "content": {"application/json": media}}


def _header(name: str, description: str, *, required: bool = False) -> dict[str, Any]:
    return {"name": name, "in": "header", "required": required, "description": description,
            "schema": {"type": "string"}}  # fmt: skip


def _operation(op: str, summary: str, ok: dict[int, dict[str, Any]], **kw: Any) -> dict[str, Any]:
    responses: dict[str, Any] = {str(code): body for code, body in ok.items()}
    for code in (*ERROR_STATUSES[op], 405):
        responses[str(code)] = _json_body(ErrorReply, _DESCRIPTIONS[code], ERROR_EXAMPLE)
    if op in REQUESTS and "requestBody" in kw:
        kw["requestBody"]["content"]["application/json"]["example"] = REQUESTS[op]
    out = {"operationId": op, "summary": summary, "responses": responses, **kw}
    if op in ("execute", "execute_batch"):  # public: no proof; above: DPoP or Handshake-Proof
        out["security"] = [{"session": [], "dpop": []}, {"session": []}]
    elif op != "keys":
        out["security"] = [{"session": []}]
    return out


def _ok(op: str, struct: type[msgspec.Struct] | str, description: str) -> dict[int, dict[str, Any]]:
    return {200: _json_body(struct, description, RESPONSES[op])}


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
    pending = {**RESPONSES["authorize"], "status": "pending_approval", "tier": "restricted"}
    signed = _header(PROOF_HEADER, "the signed decision (handshake-decision+jwt over {txn, "
                     "preview_hash, decision}); required when the approver's session is bound "
                     "to a key or policy says signed_decisions")  # fmt: skip
    return {
        "/v1/authorize": {"post": _operation(
            "authorize", "Phase 1: authorize one exact operation",
            {**_ok("authorize", Grant, "granted"),
             202: _json_body(Grant, "pending_approval: poll status, then execute the same "
                             "token", pending)},
            requestBody={"required": True, **_json_body(AuthorizeRequest, "the operation")})},
        "/v1/execute": {"post": _operation(
            "execute", "Phase 2: execute it with the token",
            _ok("execute", ExecuteReply, "the result and its signed receipt"),
            parameters=execute_headers,
            requestBody={"required": True, **_json_body(ExecuteRequest, "the operation")})},
        "/v1/reconcile": {"post": _operation(
            "reconcile", "Settle a transaction left outcome_unknown (run it again, once)",
            _ok("reconcile", ExecuteReply, "the result and its signed receipt"),
            parameters=[_header(PROOF_HEADER,
                        "a handshake-proof+jwt over {txn, tool: handshake.reconcile, "
                        "ph: reconcile}, for tiers internal and above")],
            requestBody={"required": True, **_json_body(ReconcileRequest, "the transaction")})},
        "/v1/tools": {"get": _operation(
            "tools", "The tools this caller may use", _ok("tools", ToolsReply, "tools"))},
        "/v1/status/{txn}": {"get": _operation(
            "status", "A transaction's status (long poll with wait)",
            _ok("status", StatusReply, "status"), parameters=[txn, wait])},
        "/v1/keys": {"get": _operation(
            "keys", "JWKS of the receipt-signing keys", _ok("keys", Jwks, "JWKS"))},
        "/v1/approvals": {"get": _operation(
            "list_approvals", "The transactions this approver may decide (never their own)",
            _ok("list_approvals", ApprovalsReply, "pending approvals"))},
        "/v1/approvals/{txn}/decide": {"post": _operation(
            "decide", "Approve or deny a pending transaction",
            _ok("decide", DecideReply, "the decision, counted"), parameters=[txn, signed],
            requestBody={"required": True, **_json_body("DecideBody", "the decision")})},
    }  # fmt: skip


def _batch_paths() -> dict[str, Any]:
    """The batch routes (protocol.md, "Batch"): the NATS batch subjects over HTTP."""
    return {
        "/v1/authorize/batch": {"post": _operation(
            "authorize_batch", "Phase 1 for many operations: one result each, in order",
            _ok("authorize_batch", "AuthorizeBatchReply", "each operation's grant or error "
                "(a pending_approval grant too: the response is 200)"),
            requestBody={"required": True,
                         **_json_body(BatchAuthorizeRequest, "the operations")})},
        "/v1/execute/batch": {"post": _operation(
            "execute_batch", "Phase 2 for many operations, each with its own token",
            _ok("execute_batch", "ExecuteBatchReply", "each operation's result and receipt, "
                "or its error; with receipts: merkle, one signed root (batch_receipt) and "
                "each operation's inclusion in place of its receipt"),
            parameters=[
                _header(DPOP_HEADER, "DPoP proof (RFC 9449) of this request (htu: "
                        "/v1/execute/batch): it proves every operation of the batch"),
                _header(PROOF_HEADER, "a handshake-batch-proof+jwt instead of DPoP: it "
                        "proves the operations its ops claim names")],
            requestBody={"required": True,
                         **_json_body(BatchExecuteRequest, "the operations and their tokens")})},
    }  # fmt: skip


def _restrict(schema: dict[str, Any], values: list[str]) -> None:
    """Give the string member of ``schema`` (a property's) the closed set ``values``."""
    for member in [schema, *schema.get("anyOf", [])]:
        if member.get("type") == "string":
            member["enum"] = values


def _components() -> dict[str, Any]:
    structs = (AuthorizeRequest, ExecuteRequest, ReconcileRequest, DecideRequest, Grant,
               ExecuteReply, ToolsReply, StatusReply, Jwks, ApprovalsReply, DecideReply,
               ErrorReply, BatchAuthorizeRequest, BatchExecuteRequest,
               MerkleExecuteReply)  # fmt: skip
    _, components = msgspec.json.schema_components(structs, ref_template=_REF)
    for (name, prop), values in _ENUMS.items():
        _restrict(components[name]["properties"][prop], values)
    # A batch's results: each the single route's body or its error body, in order.
    # With "receipts": "merkle", an execute's is a MerkleExecuteReply (protocol.md).
    for name, replies in (
        ("AuthorizeBatchReply", ("Grant",)),
        ("ExecuteBatchReply", ("ExecuteReply", "MerkleExecuteReply")),
    ):
        one = {"oneOf": [{"$ref": _REF.format(name=n)} for n in (*replies, "ErrorReply")]}
        components[name] = {"type": "object", "title": name, "required": ["results"],
                            "properties": {"results": {"type": "array", "items": one}}}  # fmt: skip
    components["ExecuteBatchReply"]["properties"]["batch_receipt"] = {
        "type": "string", "description": "the batch's signed Merkle root (a JWS, typ "
        "handshake-batch-receipt+jwt), when the request asked for merkle receipts and "
        "an operation ran"}  # fmt: skip
    # The HTTP decide body: NATS's, with the transaction id in the path instead.
    body = json.loads(json.dumps(components["DecideRequest"]))
    body["required"] = [r for r in body.get("required", []) if r != "transaction_id"]
    body["properties"]["transaction_id"]["description"] = "optional; the path's, if given"
    components["DecideBody"] = body
    return components


@functools.cache
def openapi_document(public_url: str | None = None) -> bytes:
    """The document, as served at ``/openapi.json`` (``servers``: ``public_url``)."""
    doc: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {"title": "mcp-handshake gateway", "version": VERSION,
                 "description": "Protocol v1 over HTTP; see docs/gateway.md."},
        **({"servers": [{"url": public_url.rstrip("/")}]} if public_url else {}),
        "paths": {**_paths(), **_batch_paths()},
        "components": {
            "schemas": _components(),
            "securitySchemes": {
                "session": {
                    "type": "http", "scheme": "bearer", "bearerFormat": "JWT",
                    "description": "the session JWT (scheme Bearer, or DPoP for a "
                                   "DPoP-bound session)"},
                "dpop": {
                    "type": "apiKey", "in": "header", "name": DPOP_HEADER,
                    "description": "a DPoP proof (RFC 9449: typ dpop+jwt, alg EdDSA, Ed25519 "
                                   "or ES256, htm POST, htu the server's URL + /v1/execute "
                                   "(or /v1/execute/batch), ath, and the server's nonce "
                                   "where DPoP-Nonce is sent) by the key the session's "
                                   "cnf.jkt names"},
            },
        },
    }  # fmt: skip
    return json.dumps(doc, indent=1).encode()


@functools.cache
def docs_page() -> bytes:
    """``/docs``: a self-contained page (no external script) that lists the operations
    of ``/openapi.json`` and sends requests to them."""
    return resources.files(__package__).joinpath("docs.html").read_bytes()
