"""The audit events of executors: ``catalog.drift``, when an upstream tool no longer
matches the definition its catalog pinned (the call was refused, nothing ran)."""

from __future__ import annotations

from typing import Any

from mcp_handshake.services.runtime.audit import Audit, unique
from mcp_handshake.services.runtime.endpoint import AuditHook, Outcome, Request
from mcp_handshake.services.runtime.telemetry import Metrics
from mcp_handshake.shared.errors import HandshakeError

__all__ = ["executor_audit"]


def executor_audit(
    audit: Audit, metrics: Metrics, drifted: dict[str, str] | None = None
) -> AuditHook:
    """The hook; ``drifted`` ("target.tool" -> what changed) is kept for ``status``."""

    def hook(req: Request[Any] | None, outcome: Outcome) -> None:
        drift = outcome.facts.get("drift") if isinstance(outcome, HandshakeError) else None
        if not drift:
            return
        metrics.drift.add(1, {"target": drift["target"], "tool": drift["tool"]})
        if drifted is not None:
            drifted[f"{drift['target']}.{drift['tool']}"] = drift["change"]
        txn = req.body.txn if req is not None else None
        audit.emit(audit.event(
            "catalog.drift", "unavailable", unique=unique(), txn=txn, tool=drift["tool"],
            detail=f"{drift['target']}: upstream tool {drift['tool']} {drift['change']}",
        ))  # fmt: skip

    return hook
