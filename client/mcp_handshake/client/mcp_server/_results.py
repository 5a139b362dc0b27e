"""What a call answers: results, errors and pending approvals as ``CallToolResult``.

Results go in ``structuredContent`` (an object; any other JSON value comes
wrapped as ``{"result": value}``) and, as JSON text, in ``content`` for hosts
that only read text. ``_meta`` carries ``mcp-handshake/transaction_id`` and
``mcp-handshake/receipt`` (the signed receipt JWT).
"""

from __future__ import annotations

import json
from typing import Any

import mcp_types as types

from mcp_handshake.client import CallResult, HandshakeError, PendingCall

from ._catalog import META

__all__ = ["error_result", "pending_result", "success_result", "value_result"]


def _text(value: Any) -> list[types.ContentBlock]:
    return [types.TextContent(text=json.dumps(value, ensure_ascii=False, default=str))]


def success_result(res: CallResult) -> types.CallToolResult:
    structured = res.result if isinstance(res.result, dict) else {"result": res.result}
    return types.CallToolResult(
        content=_text(res.result),
        structured_content=structured,
        _meta={
            f"{META}transaction_id": res.transaction_id,
            f"{META}receipt": res.receipt,
            f"{META}tier": res.claims.get("tier"),
        },
    )


def value_result(value: dict[str, Any]) -> types.CallToolResult:
    """A plain answer of this server's own (``handshake_status``)."""
    return types.CallToolResult(content=_text(value), structured_content=value)


def pending_result(pending: PendingCall, waited_s: float) -> types.CallToolResult:
    """Not an error: the operation is waiting for a human; the agent can follow up."""
    txn = pending.transaction_id
    body = {
        "status": "pending_approval",
        "transaction_id": txn,
        "tool": pending.tool,
        "message": f"{pending.tool} is waiting for approval (waited {waited_s:.0f} s); "
        f"nothing has run yet. Call handshake_wait with transaction_id {txn!r} to wait "
        "again and run it once approved, or handshake_status to check.",
    }
    return types.CallToolResult(
        content=[types.TextContent(text=body["message"])],
        structured_content=body,
        _meta={f"{META}transaction_id": txn},
    )


def error_result(exc: HandshakeError) -> types.CallToolResult:
    """A protocol error as a tool error: its code and its (user-safe) message."""
    error: dict[str, Any] = {"code": exc.code, "message": exc.message, "retryable": exc.retryable}
    meta: dict[str, Any] = {}
    if exc.transaction_id:
        error["transaction_id"] = meta[f"{META}transaction_id"] = exc.transaction_id
    if exc.retry_after_s is not None:
        error["retry_after_s"] = exc.retry_after_s
    suffix = f" (transaction {exc.transaction_id})" if exc.transaction_id else ""
    return types.CallToolResult(
        content=[types.TextContent(text=f"{exc.code}: {exc.message}{suffix}")],
        structured_content={"error": error},
        is_error=True,
        _meta=meta or None,
    )
