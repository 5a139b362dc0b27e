"""Approval workers: queued requests, human decisions, and status long-polls."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from dataclasses import dataclass, field

from nats.aio.client import Client as NATS

from mcp_handshake.services.approval.agent import ConfirmationAgent
from mcp_handshake.services.core.policy import Caller, Policy
from mcp_handshake.services.core.sessions import SessionVerifier
from mcp_handshake.services.runtime import Request
from mcp_handshake.services.runtime.audit import Audit
from mcp_handshake.services.runtime.context import RequestContext, current
from mcp_handshake.services.store.tokens import ApprovalRecord, TokenStore
from mcp_handshake.shared.errors import Forbidden, InvalidTransaction
from mcp_handshake.shared.subjects import Subjects
from mcp_handshake.shared.wire import (
    ApprovalsReply,
    DecideReply,
    DecideRequest,
    EmptyRequest,
    PendingApproval,
    StatusReply,
    StatusRequest,
)

__all__ = [
    "AGENT_ID",
    "ApprovalDeps",
    "handle_decide",
    "handle_list",
    "handle_status",
    "public_status",
    "run_agent",
]

log = logging.getLogger(__name__)

#: How the confirmation agent appears in decisions and receipts.
AGENT_ID = "confirmation-agent"
MAX_WAIT_S = 30.0


@dataclass(slots=True)
class ApprovalDeps:
    nc: NATS
    subjects: Subjects
    sessions: SessionVerifier
    policy: Policy
    store: TokenStore
    agent: ConfirmationAgent
    audit: Audit
    #: Long-polls waiting for a decision, by transaction id.
    waiters: dict[str, set[asyncio.Future[None]]] = field(default_factory=lambda: defaultdict(set))

    def wake(self, txn: str) -> None:
        for fut in self.waiters.pop(txn, set()):
            if not fut.done():
                fut.set_result(None)

    async def announce(self, txn: str) -> None:
        """Tell every approval worker a decision landed (their long-polls re-read)."""
        await self.nc.publish(self.subjects.approval_decided(txn), b"")


def public_status(stored: str, decided_by: str | None) -> str:
    if stored == "granted" and decided_by:
        return "approved"
    return {"burnt": "invalidated"}.get(stored, stored)


def _is_approver(caller: Caller, record_roles: list[str] | frozenset[str]) -> bool:
    return bool(caller.roles & set(record_roles))


async def handle_status(req: Request[StatusRequest], deps: ApprovalDeps) -> StatusReply:
    caller = deps.sessions.verify(req.header("Authorization"))
    txn = req.body.transaction_id
    st = await deps.store.status(txn)
    # Unknown and not-yours look the same: no oracle for other users' transactions.
    if st is None or (st.sub != caller.sub and not _is_approver(caller, _all_approver_roles(deps))):
        raise InvalidTransaction(transaction_id=txn)
    wait = min(req.body.wait_s or 0.0, MAX_WAIT_S)
    if st.status == "pending_approval" and wait > 0:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        deps.waiters[txn].add(fut)
        try:
            left = min(wait, max(st.expires_at - time.time(), 0.0))
            await asyncio.wait_for(asyncio.shield(fut), timeout=left + 0.05)
        except TimeoutError:
            pass
        finally:
            waiting = deps.waiters.get(txn)
            if waiting is not None:
                waiting.discard(fut)
                if not waiting:
                    del deps.waiters[txn]
        st = await deps.store.status(txn) or st
    status = public_status(st.status, st.decided_by)
    if status == "pending_approval" and st.expires_at <= time.time():
        status = "expired"
    return StatusReply(
        transaction_id=txn, status=status, expires_at=st.expires_at, decided_by=st.decided_by
    )


def _all_approver_roles(deps: ApprovalDeps) -> frozenset[str]:
    roles = set(deps.policy.defaults.approver_roles)
    for rule in deps.policy.tools.values():
        roles |= rule.approver_roles
    return frozenset(roles)


def _may_decide(caller: Caller, rec: ApprovalRecord) -> bool:
    voted = any(a.by == caller.sub for a in rec.approvals)
    return _is_approver(caller, rec.approver_roles) and caller.sub != rec.sub and not voted


async def handle_list(req: Request[EmptyRequest], deps: ApprovalDeps) -> ApprovalsReply:
    caller = deps.sessions.verify(req.header("Authorization"))
    if not _is_approver(caller, _all_approver_roles(deps)):
        raise Forbidden("an approver role is required")
    out = []
    for txn in await deps.store.pending():
        rec = await deps.store.approval_record(txn)
        if rec is None or rec.status != "pending_approval" or not _may_decide(caller, rec):
            continue
        out.append(
            PendingApproval(
                transaction_id=rec.txn,
                sub=rec.sub,
                tool=rec.tool,
                tier=rec.tier,
                preview=rec.preview,
                preview_hash=rec.preview_hash,
                requested_at=rec.requested_at,
                expires_at=rec.expires_at,
                approvals=len(rec.approvals),
                quorum=rec.quorum,
                escalated=rec.escalated,
                agent=rec.agent,
                reason=rec.reason,
            )
        )
    return ApprovalsReply(approvals=out)


async def handle_decide(req: Request[DecideRequest], deps: ApprovalDeps) -> DecideReply:
    ctx = current()
    ctx.txn = req.body.transaction_id
    caller = deps.sessions.verify(req.header("Authorization"))
    ctx.extra["by"] = caller.sub
    body = req.body
    rec = await deps.store.approval_record(body.transaction_id)
    if rec is not None:
        ctx.sub, ctx.tool, ctx.tier = rec.sub, rec.tool, rec.tier
        ctx.extra["preview_hash"] = rec.preview_hash
    if rec is None or rec.status != "pending_approval":
        raise InvalidTransaction(
            "no pending approval with this id", transaction_id=body.transaction_id
        )
    if not _is_approver(caller, rec.approver_roles):
        raise Forbidden("an approver role for this tool is required", transaction_id=rec.txn)
    if caller.sub == rec.sub:
        raise Forbidden("an approver may not decide their own transaction", transaction_id=rec.txn)
    outcome, status, approvals = await deps.store.decide(
        rec.txn,
        caller.sub,
        body.decision,
        token_ttl_s=deps.policy.token_ttl_s(rec.tool),
        preview_hash=rec.preview_hash,
        reason=body.reason or "",
    )
    if outcome in {"missing", "decided"}:
        raise InvalidTransaction("no pending approval with this id", transaction_id=rec.txn)
    if outcome in {"approved", "denied"}:
        await deps.announce(rec.txn)
        log.info("approval %s by a human", outcome, extra={"txn": rec.txn})
    ctx.status = public_status(status, caller.sub if outcome == "approved" else None)
    return DecideReply(
        transaction_id=rec.txn, status=ctx.status, approvals=approvals, quorum=rec.quorum
    )


async def run_agent(txn: str, deps: ApprovalDeps) -> str:
    """Let the confirmation agent decide one queued request; returns what happened."""
    rec = await deps.store.approval_record(txn)
    if rec is None or rec.status != "pending_approval":
        return "gone"
    decision = await deps.agent.decide(rec)
    ctx = RequestContext("confirmation-agent", txn=txn, sub=rec.sub, tool=rec.tool, tier=rec.tier)
    if decision.action == "humans":
        log.info("approval passed to humans: %s", decision.reason, extra={"txn": txn})
        deps.audit.emit(deps.audit.event("approval.passed", ctx, "ok", by=AGENT_ID,
                                         detail=decision.reason))  # fmt: skip
        return "humans"
    outcome, _, _ = await deps.store.decide(
        txn,
        AGENT_ID,
        decision.action,
        token_ttl_s=deps.policy.token_ttl_s(rec.tool),
        preview_hash=rec.preview_hash,
        reason=decision.reason,
        final=True,
    )
    if outcome in {"approved", "denied"}:
        await deps.announce(txn)
        log.info("confirmation agent: %s (%s)", outcome, decision.reason, extra={"txn": txn})
        ctx.status = outcome
        deps.audit.emit(deps.audit.event("approval.decided", ctx, "ok", by=AGENT_ID,
                                         id_suffix=AGENT_ID, detail=decision.reason,
                                         preview_hash=rec.preview_hash))  # fmt: skip
    return outcome
