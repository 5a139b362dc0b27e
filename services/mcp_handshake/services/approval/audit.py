"""The audit events of approvals: human decisions and the confirmation agent's."""

from __future__ import annotations

from typing import Any

from mcp_handshake.services.approval.handler import AGENT_ID, AgentOutcome
from mcp_handshake.services.runtime.audit import Audit, unique
from mcp_handshake.services.runtime.endpoint import AuditHook, Outcome, Request
from mcp_handshake.shared.protocol import PROOF_HEADER
from mcp_handshake.shared.wire import DecideReply

__all__ = ["agent_audit", "decide_audit"]


def decide_audit(audit: Audit) -> AuditHook:
    """``approval.decided`` when a vote settles it, ``approval.voted`` before quorum,
    ``approval.refused`` for a refused decision."""

    def hook(req: Request[Any] | None, outcome: Outcome) -> None:
        by = req.auth.sub if req and req.auth else None
        txn = req.body.transaction_id if req else None
        if not isinstance(outcome, DecideReply):
            code = getattr(outcome, "code", "internal")
            facts = getattr(outcome, "facts", {})
            audit.emit(audit.event("approval.refused", code, unique=unique(), txn=txn, by=by,
                                   **facts))  # fmt: skip
            return
        kind = "approval.decided" if outcome.status in {"approved", "denied"} else "approval.voted"
        # The approver's signed decision (verified before it counted), for the record.
        signature = req.header(PROOF_HEADER) if req else None
        audit.emit(audit.event(kind, "ok", unique=by, txn=txn, by=by, sub=outcome.requester,
                               tool=outcome.tool, tier=outcome.tier, status=outcome.status,
                               preview_hash=outcome.preview_hash,
                               decision=req.body.decision if req else None,
                               signature=signature))  # fmt: skip

    return hook


def agent_audit(audit: Audit, done: AgentOutcome) -> None:
    """``approval.passed`` (to humans) or ``approval.decided`` by the confirmation agent."""
    rec, decision = done.record, done.decision
    if rec is None or decision is None:
        return
    facts = {"txn": rec.txn, "sub": rec.sub, "tool": rec.tool, "tier": rec.tier, "by": AGENT_ID,
             "detail": decision.reason}  # fmt: skip
    if done.outcome == "humans":
        audit.emit(audit.event("approval.passed", "ok", **facts))
    elif done.outcome in {"approved", "denied"}:
        audit.emit(audit.event("approval.decided", "ok", unique=AGENT_ID, status=done.outcome,
                               preview_hash=rec.preview_hash, **facts))  # fmt: skip
