"""Which audit events each worker kind's requests produce (the endpoint outcome hooks)."""

from __future__ import annotations

import os
import socket
import uuid

from mcp_handshake.services.runtime.audit import Audit
from mcp_handshake.services.runtime.context import RequestContext
from mcp_handshake.services.runtime.endpoint import OutcomeHook
from mcp_handshake.services.runtime.telemetry import Metrics

__all__ = ["approval_hook", "authorize_hook", "execute_hook", "worker_id"]


def worker_id(kind: str) -> str:
    return f"{kind}@{socket.gethostname()}:{os.getpid()}"


def _unique() -> str:
    """Repeated events of one kind for one transaction (replays, refusals) all count."""
    return uuid.uuid4().hex[:12]


def authorize_hook(audit: Audit, metrics: Metrics | None = None) -> OutcomeHook:
    def hook(ctx: RequestContext, code: str) -> None:
        if ctx.endpoint != "authorize":
            return
        if code != "ok":
            audit.emit(audit.event("authorize.denied", ctx, code, id_suffix=_unique()))
            return
        if metrics is not None:
            metrics.tokens.add(1, {"event": "issued", "tier": ctx.tier or ""})
        audit.emit(audit.event("authorize.granted", ctx, "ok"))
        if ctx.status == "pending_approval":
            detail = ctx.extra.get("detail")
            audit.emit(audit.event("approval.requested", ctx, "ok", detail=detail))

    return hook


def execute_hook(audit: Audit, metrics: Metrics | None = None) -> OutcomeHook:
    def hook(ctx: RequestContext, code: str) -> None:
        if ctx.endpoint != "execute":
            return
        if metrics is not None and ctx.tier is not None:  # the token was used up
            metrics.tokens.add(1, {"event": "consumed", "tier": ctx.tier})
        if code == "ok":
            audit.emit(audit.event("execute.succeeded", ctx, "ok"))
            audit.emit(audit.event("receipt.issued", ctx, "ok"))
        elif ctx.intent_recorded:
            audit.emit(audit.event("execute.failed", ctx, code))
        else:
            audit.emit(audit.event("execute.denied", ctx, code, id_suffix=_unique()))

    return hook


def approval_hook(audit: Audit) -> OutcomeHook:
    def hook(ctx: RequestContext, code: str) -> None:
        if ctx.endpoint != "approvals-decide":
            return
        by = ctx.extra.get("by")
        if code != "ok":
            audit.emit(audit.event("approval.refused", ctx, code, by=by, id_suffix=_unique()))
            return
        kind = "approval.decided" if ctx.status in {"approved", "denied"} else "approval.voted"
        audit.emit(audit.event(kind, ctx, "ok", by=by, id_suffix=by,
                               preview_hash=ctx.extra.get("preview_hash")))  # fmt: skip

    return hook
