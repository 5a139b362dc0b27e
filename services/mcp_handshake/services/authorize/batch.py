"""``handshake.v1.authorize.batch``: many authorizations under one session verification.

Each operation goes through :func:`~.handler.handle_authorize` as it would alone
(its own policy check, rate limit, token, params hash, approval request and
audit events); the first store step of every operation (the rate-limit count or
the token's issue) shares one Redis round trip (``store.coalesce``), each distinct
policy question is asked once (``runtime.batch_policy``), each distinct params of a
tool normalized and hashed once (``core.bind.batch_bindings``), and the audit events go
to the stream together (``Audit.grouped``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import msgspec

from mcp_handshake.services.authorize.handler import AuthorizeDeps, handle_authorize
from mcp_handshake.services.core.bind import batch_bindings
from mcp_handshake.services.runtime.audit import Audit
from mcp_handshake.services.runtime.batch import check_size, op_request, run_batch
from mcp_handshake.services.runtime.batch_policy import BatchDecisions
from mcp_handshake.services.runtime.endpoint import AuditHook, Request
from mcp_handshake.services.store.coalesce import Coalescer, member_store
from mcp_handshake.services.store.scripts import Scripts
from mcp_handshake.shared.batch import BatchAuthorizeRequest, BatchReply
from mcp_handshake.shared.wire import AuthorizeRequest

__all__ = ["AuthorizeBatchDeps", "handle_authorize_batch"]


@dataclass(frozen=True, slots=True)
class AuthorizeBatchDeps:
    single: AuthorizeDeps
    #: The store's scripts, over the same Redis as ``single.store``.
    scripts: Scripts
    max_batch: int
    #: The single endpoint's audit hook, called once per operation.
    audit: AuditHook | None = None
    #: The worker's audit emitter: a batch's events go out together.
    events: Audit | None = None


async def handle_authorize_batch(
    req: Request[BatchAuthorizeRequest], deps: AuthorizeBatchDeps
) -> BatchReply:
    ops = req.body.ops
    check_size(len(ops), deps.max_batch)
    coalescer = Coalescer(deps.scripts, len(ops))
    requests = [op_request(req, op, req.headers) for op in ops]
    base = dataclasses.replace(deps.single, policy=BatchDecisions(deps.single.policy))

    async def one(op_req: Request[Any], _: int) -> msgspec.Struct:
        member = coalescer.member()
        single = dataclasses.replace(base, store=member_store(base.store, member))
        try:
            body: Request[AuthorizeRequest] = op_req
            return await handle_authorize(body, single)
        finally:
            member.leave()

    with batch_bindings():
        return await run_batch(requests, one, deps.audit, deps.events)
