"""Approval workers: human decisions, the confirmation agent, and status long-polls."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Literal

from nats.aio.client import Client as NATS

from mcp_handshake.services.approval.agent import AgentDecision, ConfirmationAgent
from mcp_handshake.services.approval.notify import Notifier
from mcp_handshake.services.core.policy import Caller
from mcp_handshake.services.core.proofs import ProofVerifier
from mcp_handshake.services.policy import Policy
from mcp_handshake.services.runtime.endpoint import Request
from mcp_handshake.services.store import Store, TxRecord
from mcp_handshake.shared.errors import (
    Forbidden,
    HandshakeError,
    InvalidTransaction,
    ValidationFailed,
)
from mcp_handshake.shared.protocol import PROOF_HEADER
from mcp_handshake.shared.subjects import Keys, Subjects
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
    "AgentOutcome",
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
    policy: Policy
    store: Store
    agent: ConfirmationAgent
    proofs: ProofVerifier
    #: Webhook notifications, when configured.
    notifier: Notifier | None = None
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


def _is_approver(caller: Caller, roles: tuple[str, ...] | frozenset[str]) -> bool:
    return bool(caller.roles & set(roles))


async def handle_status(req: Request[StatusRequest], deps: ApprovalDeps) -> StatusReply:
    caller = req.caller
    txn = req.body.transaction_id
    rec = await deps.store.tokens.record(txn)
    # Unknown and not-yours look the same: no oracle for other users' transactions.
    if rec is None or (
        rec.sub != caller.sub and not _is_approver(caller, deps.policy.all_approver_roles)
    ):
        raise InvalidTransaction(transaction_id=txn)
    wait = min(req.body.wait_s or 0.0, MAX_WAIT_S)
    if rec.status == "pending_approval" and wait > 0:
        await _wait_for_decision(deps, txn, min(wait, max(rec.expires_at - time.time(), 0.0)))
        rec = await deps.store.tokens.record(txn) or rec
    status = public_status(rec.status, rec.decided_by)
    if status == "pending_approval" and rec.expires_at <= time.time():
        status = "expired"
    return StatusReply(
        transaction_id=txn, status=status, expires_at=rec.expires_at, decided_by=rec.decided_by
    )


async def _wait_for_decision(deps: ApprovalDeps, txn: str, timeout: float) -> None:
    fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    deps.waiters[txn].add(fut)
    try:
        await asyncio.wait_for(asyncio.shield(fut), timeout=timeout + 0.05)
    except TimeoutError:
        pass
    finally:
        waiting = deps.waiters.get(txn)
        if waiting is not None:
            waiting.discard(fut)
            if not waiting:
                del deps.waiters[txn]


def _may_decide(caller: Caller, rec: TxRecord) -> bool:
    voted = any(a.by == caller.sub for a in rec.approvals)
    return _is_approver(caller, rec.approver_roles) and caller.sub != rec.sub and not voted


async def handle_list(req: Request[EmptyRequest], deps: ApprovalDeps) -> ApprovalsReply:
    caller = req.caller
    if not _is_approver(caller, deps.policy.all_approver_roles):
        raise Forbidden("an approver role is required")
    out = []
    for txn in await deps.store.approvals.pending():
        rec = await deps.store.approvals.record(txn)
        if rec is None or rec.status != "pending_approval" or not _may_decide(caller, rec):
            continue
        out.append(
            PendingApproval(
                transaction_id=rec.txn,
                sub=rec.sub,
                tool=rec.tool,
                tier=rec.tier,
                preview=rec.preview,
                preview_hash=rec.preview_hash or "",
                requested_at=rec.requested_at or 0.0,
                expires_at=rec.expires_at,
                approvals=len(rec.approvals),
                quorum=rec.quorum,
                escalated=rec.escalated,
                agent=rec.agent,
                reason=rec.reason,
                untrusted=[f for f in ("agent", "reason") if getattr(rec, f)],
            )
        )
    return ApprovalsReply(approvals=out)


async def handle_decide(req: Request[DecideRequest], deps: ApprovalDeps) -> DecideReply:
    rec = await deps.store.approvals.record(req.body.transaction_id)
    try:
        return await _decide(req, deps, rec)
    except HandshakeError as exc:
        if rec is not None:
            exc.facts.update(sub=rec.sub, tool=rec.tool, tier=rec.tier)
        raise


async def _check_signature(req: Request[DecideRequest], deps: ApprovalDeps, rec: TxRecord) -> None:
    """An approver's decision signed with their own key, over ``{txn, preview_hash,
    decision}``: required of an approver whose session is bound to a key, and of every
    approver when policy says ``signed_decisions``; verified whenever it is sent."""
    caller, signature = req.caller, req.header(PROOF_HEADER)
    if signature is None:
        if caller.jkt is not None or deps.policy.defaults.signed_decisions:
            raise ValidationFailed(
                "the decision must be signed with the approver's key (Handshake-Proof)",
                transaction_id=rec.txn,
            )
        return
    signed = await deps.proofs.verify_decision(signature, caller, txn=rec.txn,
                                               preview_hash=rec.preview_hash or "",
                                               decision=req.body.decision)  # fmt: skip
    if not await deps.store.counters.claim_once(Keys.jti(signed.thumbprint, signed.jti), 180):
        raise ValidationFailed("decision signature already used", transaction_id=rec.txn)


async def _decide(
    req: Request[DecideRequest], deps: ApprovalDeps, rec: TxRecord | None
) -> DecideReply:
    caller, body = req.caller, req.body
    if rec is None or rec.status != "pending_approval":
        raise InvalidTransaction(
            "no pending approval with this id", transaction_id=body.transaction_id
        )
    if not _is_approver(caller, rec.approver_roles):
        raise Forbidden("an approver role for this tool is required", transaction_id=rec.txn)
    if caller.sub == rec.sub:
        raise Forbidden("an approver may not decide their own transaction", transaction_id=rec.txn)
    await _check_signature(req, deps, rec)
    outcome, status, approvals = await _apply(deps, rec, caller.sub, body.decision,
                                              body.reason or "")  # fmt: skip
    if outcome in {"missing", "decided"}:
        raise InvalidTransaction("no pending approval with this id", transaction_id=rec.txn)
    if outcome in {"approved", "denied"}:
        log.info("approval %s by a human", outcome, extra={"txn": rec.txn})
    return DecideReply(
        transaction_id=rec.txn,
        status=public_status(status, caller.sub if outcome == "approved" else None),
        approvals=approvals,
        quorum=rec.quorum,
        tool=rec.tool,
        requester=rec.sub,
        tier=rec.tier,
        preview_hash=rec.preview_hash,
    )


async def _apply(
    deps: ApprovalDeps,
    rec: TxRecord,
    by: str,
    decision: Literal["approve", "deny"],
    reason: str,
    *,
    final: bool = False,
) -> tuple[str, str, int]:
    """Record one decision; wake long-polls everywhere when it settles the transaction."""
    outcome, status, approvals = await deps.store.approvals.decide(
        rec.txn,
        by,
        decision,
        token_ttl_s=deps.policy.token_ttl_s(rec.tool),
        preview_hash=rec.preview_hash or "",
        reason=reason,
        final=final,
    )
    if outcome in {"approved", "denied"}:
        await deps.announce(rec.txn)
        if deps.notifier is not None:
            deps.notifier.notify("decided", rec, status=outcome, decided_by=by)
    return outcome, status, approvals


@dataclass(frozen=True, slots=True)
class AgentOutcome:
    """What the confirmation agent did with one queued request."""

    #: ``gone`` (nothing pending), ``humans``, or the decide outcome.
    outcome: str
    record: TxRecord | None = None
    decision: AgentDecision | None = None


async def run_agent(txn: str, deps: ApprovalDeps) -> AgentOutcome:
    """Let the confirmation agent decide one queued request."""
    rec = await deps.store.approvals.record(txn)
    if rec is None or rec.status != "pending_approval":
        return AgentOutcome("gone")
    decision = await deps.agent.decide(rec)
    if decision.action == "humans":
        log.info("approval passed to humans: %s", decision.reason, extra={"txn": txn})
        if deps.notifier is not None:
            deps.notifier.notify("requested", rec, reason_for_humans=decision.reason)
        return AgentOutcome("humans", rec, decision)
    outcome, _, _ = await _apply(deps, rec, AGENT_ID, decision.action, decision.reason,
                                 final=True)  # fmt: skip
    if outcome in {"approved", "denied"}:
        log.info("confirmation agent: %s (%s)", outcome, decision.reason, extra={"txn": txn})
    return AgentOutcome(outcome, rec, decision)
