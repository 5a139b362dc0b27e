"""Examples for the OpenAPI document: one request and one reply per operation, and an
error body. Values are made up (no real token, session or key)."""

from __future__ import annotations

from typing import Any

__all__ = ["ERROR_EXAMPLE", "REQUESTS", "RESPONSES"]

_TXN = "6f1c2d4e-8a9b-4c3d-9e8f-0a1b2c3d4e5f"
_PH = "sha256:9b1f0c7e5d3a2b4c6d8e0f1a3b5c7d9e1f2a4b6c8d0e2f4a6b8c0d2e4f6a8b0c"
_RATE = {"base": "EUR", "quote": "USD"}
_PAY = {"to_account": "acct_12345678", "amount": 2500, "currency": "EUR"}

#: Request bodies, by operation id.
REQUESTS: dict[str, Any] = {
    "authorize": {"tool": "payments.get_exchange_rate", "params": _RATE,
                  "context": {"agent": "billing-bot", "reason": "quote for invoice 42"}},
    "execute": {"transaction_id": _TXN, "tool": "payments.get_exchange_rate", "params": _RATE},
    "reconcile": {"transaction_id": _TXN},
    "decide": {"decision": "approve", "reason": "checked with the requester"},
    "authorize_batch": {"ops": [{"tool": "payments.get_exchange_rate", "params": _RATE},
                                {"tool": "payments.send_payment", "params": _PAY}]},
    "execute_batch": {"ops": [{"transaction_id": _TXN, "tool": "payments.get_exchange_rate",
                               "params": _RATE, "token": "<transaction token>"}]},
}  # fmt: skip

#: Success bodies, by operation id.
RESPONSES: dict[str, Any] = {
    "authorize": {"transaction_id": _TXN, "token": "<transaction token>", "status": "granted",
                  "tier": "public", "params_hash": _PH, "expires_at": 1796562960.5},
    "execute": {"transaction_id": _TXN, "result": {"rate": 1.08}, "receipt": "<compact JWS>",
                "tier": "public", "params_hash": _PH, "result_hash": _PH},
    "reconcile": {"transaction_id": _TXN, "result": {"status": "sent"},
                  "receipt": "<compact JWS>", "tier": "restricted", "params_hash": _PH,
                  "result_hash": _PH},
    "tools": {"tools": [{"name": "payments.get_exchange_rate", "description": "A rate.",
                         "tier": "public", "params_schema": {"type": "object"},
                         "read_only": True, "idempotent": True}]},
    "status": {"transaction_id": _TXN, "status": "approved", "expires_at": 1796562960.5,
               "decided_by": "victor"},
    "keys": {"keys": [{"kty": "OKP", "crv": "Ed25519", "x": "<base64url>", "kid": "<kid>",
                       "alg": "EdDSA", "use": "sig"}]},
    "list_approvals": {"approvals": [{
        "transaction_id": _TXN, "sub": "tess", "tool": "payments.send_payment",
        "tier": "restricted", "preview": {**_PAY, "to_account": "acct_****5678"},
        "preview_hash": _PH, "requested_at": 1796562900.1, "expires_at": 1796563200.1,
        "approvals": 0, "quorum": 1, "escalated": "amount above 1000",
        "agent": "billing-bot", "reason": "supplier invoice", "untrusted": ["agent", "reason"]}]},
    "decide": {"transaction_id": _TXN, "status": "approved", "approvals": 1, "quorum": 1,
               "tool": "payments.send_payment", "requester": "tess", "tier": "restricted",
               "preview_hash": _PH},
}  # fmt: skip

_PENDING = {"error": {"code": "approval_pending", "message": "awaiting approval",
                      "transaction_id": _TXN, "retryable": True, "retry_after_s": 5.0}}  # fmt: skip
_HELD = {**RESPONSES["authorize"], "status": "pending_approval", "tier": "restricted"}
RESPONSES["authorize_batch"] = {"results": [RESPONSES["authorize"], _HELD]}
RESPONSES["execute_batch"] = {"results": [RESPONSES["execute"], _PENDING]}

ERROR_EXAMPLE = {"error": {"code": "invalid_transaction",
                           "message": "unknown or already used transaction",
                           "transaction_id": _TXN, "retryable": False,
                           "retry_after_s": None}}  # fmt: skip
