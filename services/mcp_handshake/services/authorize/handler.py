"""Phase 1: who is asking, may they, for exactly what; then a single-use token."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

import msgspec

from mcp_handshake.services.core.bind import Bound, bind
from mcp_handshake.services.core.policy import Caller
from mcp_handshake.services.core.tools import HttpOperation, ToolRegistry
from mcp_handshake.services.policy import Agent, Policy
from mcp_handshake.services.runtime.approvals import ApprovalQueue
from mcp_handshake.services.runtime.context import log_txn
from mcp_handshake.services.runtime.endpoint import Request
from mcp_handshake.services.store import Store, TxRecord
from mcp_handshake.services.store.pending import PendingLog
from mcp_handshake.shared.errors import Forbidden, InvalidParams
from mcp_handshake.shared.hashing import new_token, params_hash, token_hash
from mcp_handshake.shared.wire import (
    AuthorizeContext,
    AuthorizeRequest,
    EmptyRequest,
    Grant,
    ToolInfo,
    ToolsReply,
)

__all__ = ["AuthorizeDeps", "handle_authorize", "handle_tools"]


@dataclass(frozen=True, slots=True)
class AuthorizeDeps:
    tools: ToolRegistry
    policy: Policy
    store: Store
    approvals: ApprovalQueue
    #: The durable copy of pending approvals (restored if Redis loses everything).
    pending: PendingLog | None = None


async def handle_authorize(req: Request[AuthorizeRequest], deps: AuthorizeDeps) -> Grant:
    caller = req.caller
    body = req.body
    tool = deps.tools.get(body.tool)
    txn = str(uuid.uuid4())  # before the decision: a refusal names it (``policy explain``)
    log_txn(txn)
    agent = Agent(nats_user=req.nats_user, jkt=caller.jkt)
    try:
        bound = bind(tool, body.params,
                     lambda p: deps.policy.decide(caller, tool.name, p, phase="authorize",
                                                  agent=agent))  # fmt: skip
    except InvalidParams:
        if not deps.policy.listable(caller, tool.name):  # say no before how the params fail
            raise Forbidden("policy does not allow this caller to use this tool") from None
        raise
    rules = bound.plan.rules
    req.facts.update(rules.facts())
    if not rules.allowed:
        raise Forbidden("policy does not allow this caller to use this tool", transaction_id=txn)
    bound.plan.check_params(bound.params)  # early refusal; execute checks again
    if rules.rate_limit is not None:
        limit = rules.rate_limit
        await deps.store.counters.rate_limit(caller.sub, tool.name, limit.requests, limit.per_s)
    token = new_token()
    th = token_hash(token)
    record = _record(txn, caller, bound, body.context)
    ttl = record.expires_at - record.auth_at
    await deps.store.tokens.issue(th, record, ttl)
    if record.status == "pending_approval":
        try:
            if deps.pending is not None:
                await deps.pending.save(th, record)
            await deps.approvals.publish(txn)
        except Exception:
            await deps.store.tokens.burn(th)  # never leave a request no approver will see
            raise
    return Grant(
        transaction_id=txn,
        token=token,
        status=record.status,
        tier=record.tier,
        params_hash=bound.ph,
        expires_at=record.expires_at,
        escalated=record.escalated,
    )


def _record(txn: str, caller: Caller, bound: Bound, context: AuthorizeContext | None) -> TxRecord:
    """The transaction as stored: granted, or pending approval with what approvers see."""
    plan, rules = bound.plan, bound.plan.rules
    now = time.time()
    granted = TxRecord(
        txn=txn,
        sub=caller.sub,
        tool=bound.tool.name,
        ph=bound.ph,
        tier=plan.tier.value,
        status="granted",
        auth_at=now,
        expires_at=now + rules.token_ttl_s,
        jkt=caller.jkt,
        agent=context.agent if context else None,
        escalated=plan.escalated,
    )
    if not plan.needs_approval:
        return granted
    preview = plan.preview(bound.params)
    return msgspec.structs.replace(
        granted,
        status="pending_approval",
        expires_at=now + rules.approval_ttl_s,
        params=bound.params,
        preview=preview,
        preview_hash=params_hash(preview),
        quorum=rules.quorum,
        approver_roles=tuple(sorted(rules.approver_roles)),
        requested_at=now,
        reason=context.reason if context else None,
    )


async def handle_tools(req: Request[EmptyRequest], deps: AuthorizeDeps) -> ToolsReply:
    caller = req.caller
    return ToolsReply(
        tools=[
            ToolInfo(
                name=t.name,
                description=t.description,
                tier=t.tier.value,
                params_schema=deps.tools.schema(t.name),
                **operation_hints(t.operation),
            )
            for t in deps.tools
            if deps.policy.listable(caller, t.name)
        ]
    )


def operation_hints(operation: object) -> dict[str, bool]:
    """What the catalog may say of an operation's effect (``ToolInfo.read_only`` and
    ``idempotent``): only an HTTP operation's method and key tell; a function says
    nothing."""
    if not isinstance(operation, HttpOperation):
        return {}
    method = operation.method.upper()
    return {"read_only": method in {"GET", "HEAD"},
            "idempotent": method in {"GET", "HEAD", "PUT", "DELETE"}
            or operation.idempotency_key}  # fmt: skip
