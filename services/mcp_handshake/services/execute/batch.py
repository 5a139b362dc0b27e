"""``handshake.v1.execute.batch``: many executions under one session verification.

Each operation goes through :func:`~.handler.handle_execute` as it would alone:
its own token (consumed atomically), binding, policy, tier checks, gated intent,
dispatch, receipt (its own signature: a v1 receipt; or, when the request asks for
``merkle`` receipts, its leaf in the batch's tree, whose root is signed once:
``execute.merkle``) and audit events. What the
operations share is paid once: the session verification, the batch proof
(``core.batchproof``), one Redis round trip for every token's consume
(``store.coalesce``: one consume script per token, in one pipeline), and one
signed dispatch message per target (``execute.dispatches``), whose items the
executor runs concurrently, each distinct policy question
(``runtime.batch_policy``), and the normalization and hash of each distinct params
of a tool (``core.bind.batch_bindings``). The intents of all operations are published
concurrently, each with its own ``Nats-Msg-Id``; the other audit events of the
batch go to the stream together (``Audit.grouped``).

Proof of possession: a batch proof (``Handshake-Proof``) for the operations it
names, or, from the HTTP gateway, a DPoP proof of the whole request (``POST
.../v1/execute/batch``), which proves every operation as a DPoP proof proves the
single execute's one (:func:`_request_proof`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgspec

from mcp_handshake.services.core.batchproof import BatchProof, RequestProof, verify_batch_proof
from mcp_handshake.services.core.bind import batch_bindings
from mcp_handshake.services.core.dpop import (
    DPOP_HEADER,
    DPOP_HTU_HEADER,
    DPOP_HTU_TAG_HEADER,
    EXECUTE_BATCH_PATH,
)
from mcp_handshake.services.core.policy import Caller
from mcp_handshake.services.core.proofs import ProofVerifier, VerifiedProof
from mcp_handshake.services.core.signing import DispatchSigner
from mcp_handshake.services.execute.dispatches import DispatchRound, Unsigned
from mcp_handshake.services.execute.handler import ExecuteDeps, handle_execute
from mcp_handshake.services.execute.merkle import Leaves, merkle_reply
from mcp_handshake.services.runtime.batch import check_size, op_request, run_batch
from mcp_handshake.services.runtime.batch_policy import BatchDecisions
from mcp_handshake.services.runtime.endpoint import AuditHook, Request
from mcp_handshake.services.store.coalesce import Coalescer, member_store
from mcp_handshake.services.store.scripts import Scripts
from mcp_handshake.shared.batch import BatchExecuteRequest, BatchReply
from mcp_handshake.shared.errors import ValidationFailed
from mcp_handshake.shared.protocol import AUTHORIZATION_HEADER, PROOF_HEADER, TOKEN_HEADER
from mcp_handshake.shared.wire import ExecuteRequest

__all__ = ["ExecuteBatchDeps", "handle_execute_batch"]

_UNSIGNED = Unsigned()
#: An operation's stand-in proof header: its check is answered by the batch proof.
_PROVEN = {PROOF_HEADER: "batch"}


@dataclass(frozen=True, slots=True)
class ExecuteBatchDeps:
    single: ExecuteDeps
    #: The store's scripts, over the same Redis as ``single.store``.
    scripts: Scripts
    #: Signs a batch of dispatches (``typ: handshake-dispatch-batch+jws``).
    batch_signer: DispatchSigner
    max_batch: int
    #: The single endpoint's audit hook, called once per operation.
    audit: AuditHook | None = None


class _BatchProofs(ProofVerifier):
    """Each operation's proof check, answered from the batch proof verified once."""

    def __init__(self, proof: BatchProof | None, error: ValidationFailed | None) -> None:
        self._proof = proof
        self._error = error

    async def verify(
        self, proof: str | None, caller: Caller, *, txn: str, tool: str, ph: str
    ) -> VerifiedProof:
        if self._proof is None:
            message = self._error.message if self._error else "proof of possession required"
            raise ValidationFailed(message)
        return self._proof.for_op(txn, ph)

    async def verify_dpop(
        self,
        proof: str,
        caller: Caller,
        *,
        htu: str | None,
        htu_tag: str | None,
        authorization: str | None,
        paths: tuple[str, ...] = (),
    ) -> VerifiedProof:
        raise ValidationFailed("a batch is proven by a batch proof (Handshake-Proof)")


async def _batch_proof(
    req: Request[BatchExecuteRequest], deps: ExecuteBatchDeps
) -> tuple[_BatchProofs, Callable[[str], dict[str, str]]]:
    """The proof checker of the operations, and the proof header of each operation by its
    transaction id: an operation the proof names is checked against it (and refused if
    its params hash differs); one it does not name goes unproven, as a single call
    without a proof (refused if its tier needs one). A proof that fails its own checks
    refuses every operation, as a bad proof refuses a single call."""
    raw = req.header(PROOF_HEADER)
    if raw is None and req.header(DPOP_HEADER) is not None:
        return await _request_proof(req, deps), lambda _: _PROVEN
    if raw is None:
        return _BatchProofs(None, None), lambda _: {}
    try:
        proof = await verify_batch_proof(deps.single.proofs, raw, req.caller)
    except ValidationFailed as exc:
        return _BatchProofs(None, exc), lambda _: _PROVEN
    named = {txn for txn, _ in proof.covered}
    return _BatchProofs(proof, None), lambda txn: _PROVEN if txn in named else {}


async def _request_proof(req: Request[BatchExecuteRequest], deps: ExecuteBatchDeps) -> _BatchProofs:
    """A DPoP proof of the whole request, as the gateway forwards it from ``POST
    /v1/execute/batch``: verified as at the single execute (its ``htu`` vouched by the
    gateway key, and for the batch URI only), then its ``jti`` claimed once for the
    request, so a replayed proof refuses the whole batch. It proves every operation
    (each claims a jti derived from it); refused, it refuses every operation and uses
    their tokens up, as a refused DPoP proof does the single execute's."""
    single = deps.single
    try:
        proof = await single.proofs.verify_dpop(
            req.header(DPOP_HEADER) or "", req.caller, htu=req.header(DPOP_HTU_HEADER),
            htu_tag=req.header(DPOP_HTU_TAG_HEADER),
            authorization=req.header(AUTHORIZATION_HEADER), paths=(EXECUTE_BATCH_PATH,),
        )  # fmt: skip
        await single.store.reconciles.claim_jti(proof.thumbprint, proof.jti, "")
    except ValidationFailed as exc:
        return _BatchProofs(None, exc)
    return _BatchProofs(RequestProof(proof.jti, proof.thumbprint), None)


async def handle_execute_batch(
    req: Request[BatchExecuteRequest], deps: ExecuteBatchDeps
) -> BatchReply:
    ops = req.body.ops
    check_size(len(ops), deps.max_batch)
    proofs, proof_header = await _batch_proof(req, deps)
    leaves = Leaves(deps.single.receipts) if req.body.receipts == "merkle" else None
    single = dataclasses.replace(deps.single, policy=BatchDecisions(deps.single.policy),
                                 proofs=proofs, dispatcher=_UNSIGNED,
                                 receipts=leaves or deps.single.receipts)  # fmt: skip
    redis = Coalescer(deps.scripts, len(ops))
    dispatches = DispatchRound(single.nc, single.subjects, deps.batch_signer, len(ops))
    requests = [
        op_request(req, ExecuteRequest(op.transaction_id, op.tool, op.params),
                   {TOKEN_HEADER: op.token, **proof_header(op.transaction_id)})
        for op in ops
    ]  # fmt: skip

    async def one(op_req: Request[Any], _: int) -> msgspec.Struct:
        scripts, nc = redis.member(), dispatches.member()
        op_deps = dataclasses.replace(single, store=member_store(single.store, scripts), nc=nc)
        try:
            return await handle_execute(op_req, op_deps)
        finally:
            scripts.leave()
            nc.leave()

    with batch_bindings():
        reply = await run_batch(requests, one, deps.audit, deps.single.audit)
    if leaves is None:
        return reply
    return merkle_reply(reply, leaves, req.caller.sub)
