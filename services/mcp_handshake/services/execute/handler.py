"""Phase 2: burn the token, re-check everything, dispatch, sign a receipt."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import msgspec
from nats.aio.client import Client as NATS

from mcp_handshake.services.core.bind import Bound
from mcp_handshake.services.core.dpop import DPOP_HEADER, DPOP_HTU_HEADER, DPOP_HTU_TAG_HEADER
from mcp_handshake.services.core.proofs import ProofVerifier, VerifiedProof
from mcp_handshake.services.core.signing import DispatchSigner, ReceiptSigner
from mcp_handshake.services.core.tools import ToolRegistry
from mcp_handshake.services.execute.decide import bound_call, still_allowed
from mcp_handshake.services.execute.gate import Gate, intent_key, noted
from mcp_handshake.services.policy import Policy
from mcp_handshake.services.runtime.audit import Audit
from mcp_handshake.services.runtime.endpoint import Request
from mcp_handshake.services.store import Store, TxRecord
from mcp_handshake.shared import protocol
from mcp_handshake.shared.errors import (
    HandshakeError,
    InternalError,
    InvalidTransaction,
    OutcomeUnknown,
    TargetError,
    Unavailable,
    ValidationFailed,
)
from mcp_handshake.shared.hashing import canonical_json, sha256_tagged, token_hash
from mcp_handshake.shared.protocol import (
    AUTHORIZATION_HEADER,
    DISPATCH_HEADER,
    PROOF_HEADER,
    TOKEN_HEADER,
)
from mcp_handshake.shared.subjects import Subjects
from mcp_handshake.shared.wire import (
    Dispatch,
    DispatchReply,
    EmptyRequest,
    ExecuteReply,
    ExecuteRequest,
    Jwks,
)

__all__ = ["ExecuteDeps", "Signed", "handle_execute", "handle_keys", "intent_key", "send_dispatch",
           "sign_dispatch"]  # fmt: skip

log = logging.getLogger(__name__)

#: Executor errors an agent may see as they are; anything else is a bug of ours.
_PASSTHROUGH = {TargetError.code, OutcomeUnknown.code, Unavailable.code}


@dataclass(slots=True)
class ExecuteDeps:
    nc: NATS
    subjects: Subjects
    tools: ToolRegistry
    policy: Policy
    store: Store
    proofs: ProofVerifier
    audit: Audit
    receipts: ReceiptSigner
    dispatcher: DispatchSigner
    executor_timeout_s: float
    #: Publish the execute intent with the consume (``HANDSHAKE_EXECUTE_INTENT=concurrent``).
    intent_with_consume: bool = True
    background: set[asyncio.Task[None]] = field(default_factory=set)

    def later(self, coro: Any) -> None:
        """Run bookkeeping off the hot path, keeping a reference until it ends."""
        task = asyncio.get_running_loop().create_task(coro)
        self.background.add(task)
        task.add_done_callback(self.background.discard)


async def handle_execute(req: Request[ExecuteRequest], deps: ExecuteDeps) -> ExecuteReply:
    caller, body = req.caller, req.body
    txn = body.transaction_id
    th = token_hash(req.header(TOKEN_HEADER) or "")
    bound = bound_call(deps.tools, deps.policy, req, caller.jkt)
    # The policy in force now decides, in both directions: who may, the tier, its checks,
    # proof, approval and masks. A caller it no longer allows (a forbid landed, even after
    # approval) is refused by consume (once the binding matches), before any other check
    # can tell more.
    allowed = bound is not None and bound.plan.rules.allowed
    proof = await _checked(req, deps, bound, th) if bound is not None and allowed else None
    allowed = allowed and bound is not None and still_allowed(deps.tools, deps.policy, req,
                                                              bound, proof)  # fmt: skip
    consume = deps.store.tokens.consume(
        th,
        sub=caller.sub,
        tool=body.tool,
        txn=txn,
        ph=bound.ph if bound is not None else "",
        allowed=allowed,
        proof_required=bound is not None and bound.plan.needs_proof,
        approval_required=bound is not None and bound.plan.needs_approval,
        proof=proof is not None,
        jti=proof.jti if proof else "",
        thumbprint=proof.thumbprint if proof else "",
    )
    if bound is None or not allowed:  # refused by consume (a bad binding cannot match)
        record = await consume
        raise noted(InvalidTransaction(transaction_id=txn), {"tier": record.tier, "ph": record.ph})
    plan = bound.plan
    tier = plan.tier.value
    intent = {"txn": txn, "sub": caller.sub, "tool": body.tool, "tier": tier, "ph": bound.ph,
              **req.facts}  # fmt: skip
    early = deps.intent_with_consume and not plan.needs_approval
    gate = Gate(deps.audit, deps.store.tokens, deps.later, consume, intent, th, early=early)
    try:  # without approval the dispatch is known now: signed while the consume runs
        signed = None if plan.needs_approval else await _presigned(deps, txn, caller.sub, bound)
    except BaseException:
        gate.abandon()
        raise
    record = await gate.passed()
    claims = _claims(record, txn, tier)  # ready before the executor answers
    try:
        result = plan.mask_result(await _dispatch(deps, record, bound, th, signed))
        claims["rh"] = rh = result_hash(result, txn)
    except HandshakeError as exc:
        raise noted(exc, {"tier": tier, "ph": record.ph, "intent": True}) from None
    claims["iat"] = time.time()
    receipt = deps.receipts.sign(claims)
    return ExecuteReply(transaction_id=txn, result=result, receipt=receipt, tier=tier,
                        params_hash=record.ph, result_hash=rh)  # fmt: skip


def _claims(record: TxRecord, txn: str, tier: str) -> dict[str, Any]:
    """The receipt's claims but the result hash and the time (filled in, in place)."""
    return {"sub": record.sub, "txn": txn, "tool": record.tool, "tier": tier, "ph": record.ph,
            "rh": "", "iat": 0.0, "auth_at": record.auth_at,
            "approvals": [{"by": a.by, "at": a.at} for a in record.approvals]}  # fmt: skip


async def _checked(
    req: Request[ExecuteRequest], deps: ExecuteDeps, bound: Bound, th: str
) -> VerifiedProof | None:
    """Tier checks before the token is consumed; a refused check uses the token up."""
    txn = req.body.transaction_id
    try:
        bound.plan.check_params(bound.params)
        raw = req.header(PROOF_HEADER)
        if raw is None:
            # A DPoP proof (RFC 9449), as the HTTP gateway forwards it: verified here.
            dpop = req.header(DPOP_HEADER)
            if dpop is None:
                return None
            htu, tag = req.header(DPOP_HTU_HEADER), req.header(DPOP_HTU_TAG_HEADER)
            auth = req.header(AUTHORIZATION_HEADER)
            return await deps.proofs.verify_dpop(
                dpop, req.caller, htu=htu, htu_tag=tag, authorization=auth
            )
        return await deps.proofs.verify(raw, req.caller, txn=txn, tool=bound.tool.name, ph=bound.ph)
    except ValidationFailed as exc:
        await deps.store.tokens.burn(th)
        exc.transaction_id = txn
        raise


def result_hash(result: Any, txn: str) -> str:
    try:
        return sha256_tagged(canonical_json(result))
    except ValueError:
        log.error("target result cannot be canonicalized", extra={"txn": txn})
        raise TargetError(
            "the target's answer holds values that cannot be signed", transaction_id=txn
        ) from None


@dataclass(frozen=True, slots=True)
class Signed:
    """A dispatch, its exact bytes and their detached signature."""

    body: Dispatch
    data: bytes
    signature: str


#: Loop turns for a store command just started to reach its socket (redis-py hands the
#: write to a task of its own), so that work done next overlaps the round trip.
_SEND_TURNS = 2
#: A dispatch signed ahead is sent only while this fresh: its validity (``exp``) must
#: still cover the executor's whole timeout, as a dispatch signed when sent does.
_AHEAD_MAX_AGE_S = 0.05


async def _presigned(deps: ExecuteDeps, txn: str, sub: str, bound: Bound) -> Signed:
    for _ in range(_SEND_TURNS):
        await asyncio.sleep(0)
    return sign_dispatch(deps, txn, sub, bound, bound.params, bound.ph)


def sign_dispatch(
    deps: ExecuteDeps, txn: str, sub: str, bound: Bound, params: dict[str, Any], ph: str
) -> Signed:
    now = time.time()
    tool = bound.tool
    body = Dispatch(txn=txn, sub=sub, tool=tool.name, target=tool.target, params=params,
                    ph=ph, iat=now, exp=now + deps.executor_timeout_s)  # fmt: skip
    data = msgspec.json.encode(body)
    return Signed(body, data, deps.dispatcher.sign(data))


async def _dispatch(
    deps: ExecuteDeps, record: TxRecord, bound: Bound, th: str, signed: Signed | None
) -> Any:
    # Restricted: run exactly the params that were approved, as stored at authorize. A
    # dispatch signed ahead is used only if it says what the consumed record says.
    params = record.params if record.params is not None else bound.params
    if signed is None or record.params is not None or not _usable(signed.body, record):
        signed = sign_dispatch(deps, record.txn, record.sub, bound, params, record.ph)
    try:
        reply = await _send(deps, signed)
    except HandshakeError as exc:
        unknown = isinstance(exc, OutcomeUnknown)
        if unknown:  # keep what ran, so the caller can reconcile it
            await deps.store.reconciles.unknown(th, params)
        else:
            deps.later(deps.store.tokens.set_status(th, "failed"))
        if exc.code not in _PASSTHROUGH:
            log.error("executor refused a dispatch", extra={"txn": record.txn, "code": exc.code})
            raise InternalError(transaction_id=record.txn) from None
        if unknown:
            log.warning("executor did not answer in time", extra={"txn": record.txn})
        exc.transaction_id = record.txn
        raise
    return reply.result


def _usable(body: Dispatch, record: TxRecord) -> bool:
    return time.time() - body.iat <= _AHEAD_MAX_AGE_S and (
        body.txn, body.sub, body.tool, body.ph) == (
        record.txn, record.sub, record.tool, record.ph)  # fmt: skip


async def send_dispatch(deps: ExecuteDeps, body: Dispatch) -> DispatchReply:
    """Sign a dispatch (detached JWS over the exact bytes sent) and send it to the
    target's executors; their error replies and a missing answer are raised."""
    data = msgspec.json.encode(body)
    return await _send(deps, Signed(body, data, deps.dispatcher.sign(data)))


async def _send(deps: ExecuteDeps, signed: Signed) -> DispatchReply:
    return await protocol.request(
        deps.nc,
        deps.subjects.executor(signed.body.target),
        signed.data,
        DispatchReply,
        headers={DISPATCH_HEADER: signed.signature},
        timeout=deps.executor_timeout_s,
        timeout_error=OutcomeUnknown,
        no_responders="no executor is serving this operation; nothing was executed",
        no_answer="the target did not answer in time; the operation may or may not have happened",
        span_attributes={"handshake.transaction_id": signed.body.txn},
    )


async def handle_keys(req: Request[EmptyRequest], deps: ExecuteDeps) -> Jwks:
    return Jwks(keys=deps.receipts.jwks()["keys"])
