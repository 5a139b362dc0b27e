"""Phase 2: burn the token, re-check everything, dispatch, sign a receipt."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import msgspec
from nats.aio.client import Client as NATS
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout

from mcp_handshake.services.core.policy import Policy
from mcp_handshake.services.core.proofs import ProofVerifier
from mcp_handshake.services.core.sessions import SessionVerifier
from mcp_handshake.services.core.signing import DISPATCH_HEADER, DispatchSigner, ReceiptSigner
from mcp_handshake.services.core.tiers import plan
from mcp_handshake.services.core.tools import Tier, Tool, ToolRegistry
from mcp_handshake.services.runtime import Request
from mcp_handshake.services.runtime.audit import Audit
from mcp_handshake.services.runtime.context import current
from mcp_handshake.services.runtime.endpoint import ERROR_HEADER
from mcp_handshake.services.store.tokens import TokenStore, TxState
from mcp_handshake.shared import tracing
from mcp_handshake.shared.errors import (
    BadRequest,
    HandshakeError,
    InternalError,
    InvalidTransaction,
    OutcomeUnknown,
    TargetError,
    Unavailable,
    ValidationFailed,
    error_from_wire,
)
from mcp_handshake.shared.hashing import canonical_json, params_hash, sha256_tagged, token_hash
from mcp_handshake.shared.proofs import PROOF_HEADER
from mcp_handshake.shared.subjects import Subjects
from mcp_handshake.shared.wire import (
    Dispatch,
    DispatchReply,
    EmptyRequest,
    ErrorReply,
    ExecuteReply,
    ExecuteRequest,
    Jwks,
)

__all__ = ["ExecuteDeps", "handle_execute", "handle_keys"]

log = logging.getLogger(__name__)

TOKEN_HEADER = "Handshake-Transaction-Token"  # noqa: S105 - a header name
#: Executor errors an agent may see as they are; anything else is a bug of ours.
_PASSTHROUGH = {TargetError.code, OutcomeUnknown.code, Unavailable.code}

_encode = msgspec.json.encode
_dispatch_reply = msgspec.json.Decoder(DispatchReply)
_error_reply = msgspec.json.Decoder(ErrorReply)


@dataclass(slots=True)
class ExecuteDeps:
    nc: NATS
    subjects: Subjects
    sessions: SessionVerifier
    tools: ToolRegistry
    policy: Policy
    store: TokenStore
    proofs: ProofVerifier
    audit: Audit
    receipts: ReceiptSigner
    dispatcher: DispatchSigner
    executor_timeout_s: float
    background: set[asyncio.Task[None]] = field(default_factory=set)

    def later(self, coro: Any) -> None:
        """Run bookkeeping off the hot path, keeping a reference until it ends."""
        task = asyncio.get_running_loop().create_task(coro)
        self.background.add(task)
        task.add_done_callback(self.background.discard)


def _normalized(tool: Tool | None, params: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """Normalized params and their hash; hash '' (never matches) when they are not valid."""
    if tool is None:
        return params, ""
    try:
        normalized = tool.normalize(params)
        return normalized, params_hash(normalized)
    except HandshakeError:
        return params, ""


async def handle_execute(req: Request[ExecuteRequest], deps: ExecuteDeps) -> ExecuteReply:
    token = req.header(TOKEN_HEADER)
    if not token:
        raise BadRequest(f"missing {TOKEN_HEADER} header")
    ctx = current()
    ctx.txn = req.body.transaction_id
    caller = deps.sessions.verify(req.header("Authorization"))
    body = req.body
    txn = body.transaction_id
    ctx.sub, ctx.tool = caller.sub, body.tool
    tool = deps.tools.find(body.tool)
    # An unknown tool or params that fail the schema cannot be what was
    # authorized: they still go through consume, so the token is burnt.
    params, ph = _normalized(tool, body.params)
    th = token_hash(token)
    tiers = plan(tool, deps.policy, params) if tool is not None and ph else None
    proof = None
    try:
        if tiers is not None:
            tiers.check_params(params)
        raw_proof = req.header(PROOF_HEADER)
        if raw_proof is not None and ph:
            proof = await deps.proofs.verify(raw_proof, caller, txn=txn, tool=body.tool, ph=ph)
    except ValidationFailed as exc:
        await deps.store.burn(th)  # a refused attempt uses the token up
        exc.transaction_id = txn
        raise
    state = await deps.store.consume(
        th,
        sub=caller.sub,
        tool=body.tool,
        txn=txn,
        ph=ph,
        proof=proof is not None,
        jti=proof.jti if proof else "",
        thumbprint=proof.thumbprint if proof else "",
    )
    ctx.tier, ctx.ph = state.tier, state.ph
    if tool is None or tiers is None:
        raise InvalidTransaction(transaction_id=txn)
    if Tier(state.tier).rank > tiers.tier.rank:  # policy changed between the phases
        tiers = plan(tool, deps.policy, params, stored_tier=state.tier)
        tiers.check_params(params)
    try:
        await deps.audit.intent(ctx)  # nothing runs without a durable intent
    except HandshakeError:
        deps.later(deps.store.set_status(th, "failed"))
        raise
    result = tiers.mask_result(await _dispatch(deps, tool, state, params, th))
    try:
        rh = sha256_tagged(canonical_json(result))
    except ValueError:
        log.error("target result cannot be canonicalized", extra={"txn": state.txn})
        raise TargetError(
            "the target's answer holds values that cannot be signed", transaction_id=state.txn
        ) from None
    ctx.rh = rh
    receipt = deps.receipts.sign(
        {
            "sub": state.sub,
            "txn": state.txn,
            "tool": state.tool,
            "tier": state.tier,
            "ph": state.ph,
            "rh": rh,
            "iat": time.time(),
            "auth_at": state.auth_at,
            "approvals": [{"by": a.by, "at": a.at} for a in state.approvals],
        }
    )
    return ExecuteReply(transaction_id=state.txn, result=result, receipt=receipt)


async def _dispatch(
    deps: ExecuteDeps, tool: Tool, state: TxState, params: dict[str, Any], th: str
) -> Any:
    now = time.time()
    body = _encode(
        Dispatch(
            txn=state.txn,
            sub=state.sub,
            tool=tool.name,
            target=tool.target,
            params=params,
            ph=state.ph,
            iat=now,
            exp=now + deps.executor_timeout_s,
        )
    )
    headers = {DISPATCH_HEADER: deps.dispatcher.sign(body)}
    subject = deps.subjects.executor(tool.target)
    try:
        with tracing.send_span(subject, **{"handshake.transaction_id": state.txn}):
            msg = await deps.nc.request(
                subject, body, timeout=deps.executor_timeout_s, headers=tracing.inject(headers)
            )
    except NoRespondersError:
        deps.later(deps.store.set_status(th, "failed"))
        raise Unavailable(
            "no executor is serving this operation; nothing was executed",
            transaction_id=state.txn,
        ) from None
    except NatsTimeout:
        deps.later(deps.store.set_status(th, "outcome_unknown"))
        log.warning("executor did not answer in time", extra={"txn": state.txn})
        raise OutcomeUnknown(transaction_id=state.txn) from None
    if msg.headers and ERROR_HEADER in msg.headers:
        raise _executor_error(msg.data, state.txn, th, deps)
    return _dispatch_reply.decode(msg.data).result


def _executor_error(data: bytes, txn: str, th: str, deps: ExecuteDeps) -> HandshakeError:
    try:
        detail = _error_reply.decode(data).error
    except msgspec.DecodeError:
        detail = None
    if detail is None or detail.code not in _PASSTHROUGH:
        log.error("executor refused a dispatch", extra={"txn": txn, "code": detail and detail.code})
        deps.later(deps.store.set_status(th, "failed"))
        return InternalError(transaction_id=txn)
    status = "outcome_unknown" if detail.code == OutcomeUnknown.code else "failed"
    deps.later(deps.store.set_status(th, status))
    return error_from_wire(detail.code, detail.message, txn)


async def handle_keys(req: Request[EmptyRequest], deps: ExecuteDeps) -> Jwks:
    return Jwks(keys=deps.receipts.jwks()["keys"])
