"""The audit events of execute requests."""

from __future__ import annotations

from typing import Any

from mcp_handshake.services.runtime.audit import Audit, unique
from mcp_handshake.services.runtime.endpoint import AuditHook, Outcome, Request
from mcp_handshake.services.runtime.telemetry import Metrics
from mcp_handshake.shared.wire import ExecuteReply

__all__ = ["execute_audit"]


def execute_audit(audit: Audit, metrics: Metrics) -> AuditHook:
    """``execute.succeeded`` and ``receipt.issued`` (one stream message); after the
    intent ``execute.failed``, before it ``execute.denied`` (each refusal counted)."""

    def hook(req: Request[Any] | None, outcome: Outcome) -> None:
        facts: dict[str, Any] = {
            "txn": req.body.transaction_id if req else None,
            "sub": req.auth.sub if req and req.auth else None,
            "tool": req.body.tool if req else None,
            **(req.facts if req else {}),  # policy: verdict, deciding ids, set hash
        }
        if isinstance(outcome, ExecuteReply):
            facts.update(tier=outcome.tier, ph=outcome.params_hash, rh=outcome.result_hash)
            metrics.tokens.add(1, {"event": "consumed", "tier": outcome.tier or ""})
            with audit.grouped():  # one message (in a batch: the batch's group)
                audit.emit(audit.event("execute.succeeded", "ok", **facts))
                audit.emit(audit.event("receipt.issued", "ok", **facts))
            return
        code = getattr(outcome, "code", "internal")
        noted: dict[str, Any] = dict(getattr(outcome, "facts", {}))
        intent = noted.pop("intent", False)
        facts.update(noted)
        if facts.get("tier") is not None:  # the token was used up
            metrics.tokens.add(1, {"event": "consumed", "tier": facts["tier"]})
        if intent:
            audit.emit(audit.event("execute.failed", code, **facts))
        else:
            audit.emit(audit.event("execute.denied", code, unique=unique(), **facts))

    return hook
