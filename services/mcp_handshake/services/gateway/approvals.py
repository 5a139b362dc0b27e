"""Approvals over HTTP: ``GET /v1/approvals`` and ``POST /v1/approvals/{txn}/decide``.

Each is the NATS request of the same name (``approvals.list``, ``approvals.decide``)
with the approver's own session, so roles, self-approval and signed decisions are
the approval worker's rules, unchanged. A signed decision (``handshake-decision+jwt``
over ``{txn, preview_hash, decision}``) travels in ``Handshake-Proof``, as on NATS.
The decide body is NATS's without ``transaction_id`` (the path names it; a body
that names another is refused): ``{"decision": "approve" | "deny", "reason"?}``.
"""

from __future__ import annotations

from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from mcp_handshake.services.gateway.errors import JSON
from mcp_handshake.services.gateway.forward import Gateway, nats_headers, read_body
from mcp_handshake.shared.errors import BadRequest
from mcp_handshake.shared.protocol import PROOF_HEADER
from mcp_handshake.shared.wire import ApprovalsReply, DecideReply

__all__ = ["decide", "decide_body", "list_approvals"]


def _gateway(request: Request) -> Gateway:
    gw: Gateway = request.app.state.gateway
    return gw


async def list_approvals(request: Request) -> Response:
    """The transactions this approver may decide (never their own)."""
    gw = _gateway(request)
    reply = await gw.forward(gw.subjects.approvals_list, b"{}", ApprovalsReply,
                             nats_headers(request))  # fmt: skip
    return Response(msgspec.json.encode(reply), media_type=JSON)


def decide_body(data: bytes, txn: str) -> bytes:
    """The NATS ``approvals.decide`` body: the HTTP body with the path's transaction id.
    Everything else (the decision's values, unknown fields) is the worker's to check."""
    try:
        body: Any = msgspec.json.decode(data) if data.strip() else None
    except msgspec.DecodeError:
        raise BadRequest("the body must be a JSON object") from None
    if not isinstance(body, dict):
        raise BadRequest('the body must be a JSON object: {"decision": "approve" | "deny"}')
    if body.setdefault("transaction_id", txn) != txn:
        raise BadRequest("the body's transaction_id is not the one in the path")
    return msgspec.json.encode(body)


async def decide(request: Request) -> Response:
    """Approve or deny one transaction, signed where the approver's session is bound to a
    key or policy says ``signed_decisions``."""
    gw = _gateway(request)
    data = await read_body(request, gw.options.max_body, gw.options.body_timeout_s)
    body = decide_body(data, request.path_params["txn"])
    reply = await gw.forward(gw.subjects.approvals_decide, body, DecideReply,
                             nats_headers(request, PROOF_HEADER))  # fmt: skip
    return Response(msgspec.json.encode(reply), media_type=JSON)
