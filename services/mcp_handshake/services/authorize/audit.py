"""The audit events of authorize requests."""

from __future__ import annotations

from typing import Any

from mcp_handshake.services.runtime.audit import Audit, unique
from mcp_handshake.services.runtime.endpoint import AuditHook, Outcome, Request
from mcp_handshake.services.runtime.telemetry import Metrics
from mcp_handshake.shared.wire import Grant

__all__ = ["authorize_audit"]


def authorize_audit(audit: Audit, metrics: Metrics) -> AuditHook:
    """``authorize.granted`` (and ``approval.requested``) or ``authorize.denied``."""

    def hook(req: Request[Any] | None, outcome: Outcome) -> None:
        who = {"sub": req.auth.sub if req and req.auth else None,
               "tool": req.body.tool if req else None, **(req.facts if req else {})}  # fmt: skip
        if not isinstance(outcome, Grant):
            txn = getattr(outcome, "transaction_id", None)
            code = getattr(outcome, "code", "internal")
            audit.emit(audit.event("authorize.denied", code, unique=unique(), txn=txn, **who))
            return
        metrics.tokens.add(1, {"event": "issued", "tier": outcome.tier})
        facts = {"txn": outcome.transaction_id, "tier": outcome.tier,
                 "ph": outcome.params_hash, "status": outcome.status, **who}  # fmt: skip
        audit.emit(audit.event("authorize.granted", "ok", **facts))
        if outcome.status == "pending_approval":
            audit.emit(audit.event("approval.requested", "ok", detail=outcome.escalated, **facts))

    return hook
