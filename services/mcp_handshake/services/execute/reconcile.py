"""Settle a transaction left ``outcome_unknown``, for its original caller.

The transaction's record kept the params that were dispatched. Reconcile
re-binds them under the policy in force (same params hash), checks a proof
where the tier needs one (``{txn, tool: "handshake.reconcile", ph: "reconcile"}``:
the caller may know only the transaction id), by the key the transaction was
bound to if any, takes a lease on the record, records an acknowledged
``execute.reconcile_intent`` (one per run), and sends a new signed dispatch
for the same transaction marked as reconcile run *n*: the executor runs the
tool's declared status operation, or the same operation if it is safe to
repeat under the same Idempotency-Key (the transaction id), once per run.
The answer gets a receipt like any execute (``reconciled: n`` added).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from mcp_handshake.services.core.bind import bind
from mcp_handshake.services.core.tiers import TierPlan
from mcp_handshake.services.execute.handler import ExecuteDeps, result_hash, send_dispatch
from mcp_handshake.services.policy import Agent
from mcp_handshake.services.runtime.audit import Audit, unique
from mcp_handshake.services.runtime.endpoint import AuditHook, Outcome, Request
from mcp_handshake.services.store import TxRecord
from mcp_handshake.shared.errors import (
    Forbidden,
    HandshakeError,
    InternalError,
    InvalidTransaction,
    OutcomeUnknown,
    TargetError,
    Unavailable,
    ValidationFailed,
)
from mcp_handshake.shared.protocol import (
    PROOF_HEADER,
    RECONCILE_PROOF_PH,
    RECONCILE_PROOF_TOOL,
)
from mcp_handshake.shared.wire import Dispatch, ExecuteReply, ReconcileRequest

__all__ = ["handle_reconcile", "reconcile_audit"]

log = logging.getLogger(__name__)

_PASSTHROUGH = {TargetError.code, OutcomeUnknown.code, Unavailable.code}


async def handle_reconcile(req: Request[ReconcileRequest], deps: ExecuteDeps) -> ExecuteReply:
    caller, txn = req.caller, req.body.transaction_id
    store = deps.store
    th, plan = await _checked(req, deps)
    run, record = await store.reconciles.take(th, caller.sub, txn, deps.executor_timeout_s + 5)
    tier = plan.tier.value
    facts: dict[str, Any] = {"txn": txn, "sub": record.sub, "tool": record.tool,
                             "tier": tier, "ph": record.ph}  # fmt: skip
    try:
        await deps.audit.intent(kind="execute.reconcile_intent", unique=str(run), **facts)
    except HandshakeError as exc:
        await store.reconciles.settle(th, "outcome_unknown")
        exc.facts["run"] = run
        raise
    try:
        result = plan.mask_result(await _redispatch(deps, record, run))
        rh = result_hash(result, txn)
    except HandshakeError as exc:
        unknown = exc.code in {OutcomeUnknown.code, Unavailable.code}
        await store.reconciles.settle(th, "outcome_unknown" if unknown else "failed")
        deps.audit.emit(deps.audit.event("execute.reconcile_failed", exc.code,
                                         unique=str(run), **facts))  # fmt: skip
        exc.facts["run"] = run
        raise
    await store.reconciles.settle(th, "executed")
    deps.audit.emit(deps.audit.event("execute.reconciled", "ok", rh=rh, **facts))
    deps.audit.emit(deps.audit.event("receipt.issued", "ok", unique=f"reconcile{run}", rh=rh,
                                     **facts))  # fmt: skip
    receipt = deps.receipts.sign(
        {"sub": record.sub, "txn": txn, "tool": record.tool, "tier": tier, "ph": record.ph,
         "rh": rh, "iat": time.time(), "auth_at": record.auth_at,
         "approvals": [{"by": a.by, "at": a.at} for a in record.approvals], "reconciled": run}
    )  # fmt: skip
    return ExecuteReply(transaction_id=txn, result=result, receipt=receipt, tier=tier,
                        params_hash=record.ph, result_hash=rh)  # fmt: skip


async def _checked(req: Request[ReconcileRequest], deps: ExecuteDeps) -> tuple[str, TierPlan]:
    """The record's token hash and the plan under the policy in force, once the caller,
    the status, the tool's declaration and (where the tier needs one) the proof pass."""
    caller, txn = req.caller, req.body.transaction_id
    found = await deps.store.tokens.locate(txn)
    if found is None or found[1] != caller.sub:
        raise InvalidTransaction(transaction_id=txn)
    current = await deps.store.tokens.record(txn)
    if current is None or current.status != "outcome_unknown" or current.params is None:
        raise InvalidTransaction(
            "only a transaction whose outcome is unknown can be reconciled", transaction_id=txn
        )
    tool = deps.tools.find(current.tool)
    if tool is None:
        raise InvalidTransaction(transaction_id=txn)
    if tool.reconcile_operation is None:
        raise Forbidden(
            "this tool declares no safe way to repeat or look up the operation",
            transaction_id=txn,
        )
    agent = Agent(nats_user=req.nats_user, jkt=caller.jkt,
                  proof=req.header(PROOF_HEADER) is not None)  # fmt: skip
    bound = bind(tool, current.params, lambda p: deps.policy.decide(
        caller, tool.name, p, phase="execute", agent=agent))  # fmt: skip
    if not bound.plan.rules.allowed:
        raise Forbidden("policy does not allow this caller to use this tool", transaction_id=txn)
    if bound.ph != current.ph:  # the params kept are the ones hashed at authorize
        raise InvalidTransaction(transaction_id=txn)
    if bound.plan.needs_proof:
        raw = req.header(PROOF_HEADER)
        proof = await deps.proofs.verify(
            raw, caller, txn=txn, tool=RECONCILE_PROOF_TOOL, ph=RECONCILE_PROOF_PH
        )
        if current.jkt and proof.thumbprint != current.jkt:
            raise ValidationFailed(
                "proof key is not the key the transaction was authorized for", transaction_id=txn
            )
        await deps.store.reconciles.claim_jti(proof.thumbprint, proof.jti, txn)
    return found[0], bound.plan


async def _redispatch(deps: ExecuteDeps, record: TxRecord, run: int) -> Any:
    tool = deps.tools.get(record.tool)
    now = time.time()
    body = Dispatch(txn=record.txn, sub=record.sub, tool=tool.name, target=tool.target,
                    params=record.params or {}, ph=record.ph, iat=now,
                    exp=now + deps.executor_timeout_s, reconcile=run)  # fmt: skip
    try:
        reply = await send_dispatch(deps, body)
    except HandshakeError as exc:
        if exc.code not in _PASSTHROUGH:
            log.error("executor refused a reconcile", extra={"txn": record.txn, "code": exc.code})
            raise InternalError(transaction_id=record.txn) from None
        exc.transaction_id = record.txn
        raise
    return reply.result


def reconcile_audit(audit: Audit) -> AuditHook:
    """Refusals before a reconcile run started (``execute.denied``); a run records its
    own intent and outcome in the handler."""

    def hook(req: Request[Any] | None, outcome: Outcome) -> None:
        if isinstance(outcome, ExecuteReply) or getattr(outcome, "facts", {}).get("run"):
            return
        facts = {"txn": req.body.transaction_id if req else None,
                 "sub": req.auth.sub if req and req.auth else None}  # fmt: skip
        code = getattr(outcome, "code", "internal")
        audit.emit(audit.event("execute.denied", code, unique=unique(), detail="reconcile",
                               **facts))  # fmt: skip

    return hook
