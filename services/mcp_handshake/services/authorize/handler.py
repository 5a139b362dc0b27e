"""Phase 1: who is asking, may they, for exactly what; then a single-use token."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Literal

from mcp_handshake.services.core.policy import Policy
from mcp_handshake.services.core.sessions import SessionVerifier
from mcp_handshake.services.core.tiers import plan
from mcp_handshake.services.core.tools import ToolRegistry
from mcp_handshake.services.runtime import Request
from mcp_handshake.services.runtime.approvals import ApprovalQueue
from mcp_handshake.services.runtime.context import current
from mcp_handshake.services.store.tokens import ApprovalRecord, TokenStore, TxState
from mcp_handshake.shared.errors import Forbidden
from mcp_handshake.shared.hashing import new_token, params_hash, token_hash
from mcp_handshake.shared.wire import AuthorizeRequest, EmptyRequest, Grant, ToolInfo, ToolsReply

__all__ = ["AuthorizeDeps", "handle_authorize", "handle_tools"]


@dataclass(frozen=True, slots=True)
class AuthorizeDeps:
    sessions: SessionVerifier
    tools: ToolRegistry
    policy: Policy
    store: TokenStore
    approvals: ApprovalQueue


async def handle_authorize(req: Request[AuthorizeRequest], deps: AuthorizeDeps) -> Grant:
    ctx = current()
    caller = deps.sessions.verify(req.header("Authorization"))
    body = req.body
    ctx.sub, ctx.tool = caller.sub, body.tool
    tool = deps.tools.get(body.tool)
    policy = deps.policy
    if not policy.allows(caller, tool.name):
        raise Forbidden("policy does not allow this caller to use this tool")
    params = tool.normalize(body.params)
    tiers = plan(tool, policy, params)
    tiers.check_params(params)  # early refusal; execute checks again
    limit = policy.rate_limit(tool.name)
    if limit is not None:
        await deps.store.rate_limit(caller.sub, tool.name, limit.requests, limit.per_s)
    ph = params_hash(params)
    now = time.time()
    txn = str(uuid.uuid4())
    ctx.txn, ctx.tier, ctx.ph = txn, tiers.tier.value, ph
    token = new_token()
    th = token_hash(token)
    context = body.context
    approval = None
    if tiers.needs_approval:
        ttl = policy.approval_ttl_s(tool.name)
        preview = tiers.preview(params)
        rule = policy.for_tool(tool.name)
        approval = ApprovalRecord(
            txn=txn,
            sub=caller.sub,
            tool=tool.name,
            tier=tiers.tier.value,
            status="pending_approval",
            expires_at=now + ttl,
            params=params,
            preview=preview,
            preview_hash=params_hash(preview),
            quorum=rule.quorum if rule else 1,
            approver_roles=sorted(policy.approver_roles(tool.name)),
            approvals=[],
            requested_at=now,
            escalated=tiers.escalated,
            agent=context.agent if context else None,
            reason=context.reason if context else None,
        )
    else:
        ttl = policy.token_ttl_s(tool.name)
    state = TxState(
        txn=txn,
        sub=caller.sub,
        tool=tool.name,
        ph=ph,
        tier=tiers.tier.value,
        auth_at=now,
        expires_at=now + ttl,
        jkt=caller.jkt,
        agent=context.agent if context else None,
        escalated=tiers.escalated,
    )
    status: Literal["granted", "pending_approval"] = "pending_approval" if approval else "granted"
    ctx.status = status
    if tiers.escalated:
        ctx.extra["detail"] = tiers.escalated
    await deps.store.issue(th, state, status, ttl, approval)
    if approval is not None:
        try:
            await deps.approvals.publish(txn)
        except Exception:
            await deps.store.burn(th)  # never leave a request no approver will see
            raise
    return Grant(
        transaction_id=txn,
        token=token,
        status=status,
        tier=state.tier,
        params_hash=ph,
        expires_at=state.expires_at,
    )


async def handle_tools(req: Request[EmptyRequest], deps: AuthorizeDeps) -> ToolsReply:
    caller = deps.sessions.verify(req.header("Authorization"))
    return ToolsReply(
        tools=[
            ToolInfo(
                name=t.name,
                description=t.description,
                tier=t.tier.value,
                params_schema=deps.tools.schema(t.name),
            )
            for t in deps.tools
            if deps.policy.allows(caller, t.name)
        ]
    )
