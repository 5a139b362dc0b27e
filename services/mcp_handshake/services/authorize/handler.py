"""Phase 1: who is asking, may they, for exactly what; then a single-use token."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

from mcp_handshake.shared.errors import Forbidden
from mcp_handshake.shared.hashing import new_token, params_hash, token_hash
from mcp_handshake.shared.wire import AuthorizeRequest, EmptyRequest, Grant, ToolInfo, ToolsReply

from ..policy import Policy
from ..runtime import Request
from ..sessions import SessionVerifier
from ..tokens import TokenStore, TxState
from ..tools import ToolRegistry

__all__ = ["AuthorizeDeps", "handle_authorize", "handle_tools"]


@dataclass(frozen=True, slots=True)
class AuthorizeDeps:
    sessions: SessionVerifier
    tools: ToolRegistry
    policy: Policy
    store: TokenStore


async def handle_authorize(req: Request[AuthorizeRequest], deps: AuthorizeDeps) -> Grant:
    caller = deps.sessions.verify(req.header("Authorization"))
    body = req.body
    tool = deps.tools.get(body.tool)
    if not deps.policy.allows(caller, tool.name):
        raise Forbidden("policy does not allow this caller to use this tool")
    params = tool.normalize(body.params)
    ph = params_hash(params)
    ttl = deps.policy.token_ttl_s(tool.name)
    now = time.time()
    txn = str(uuid.uuid4())
    token = new_token()
    state = TxState(
        txn=txn,
        sub=caller.sub,
        tool=tool.name,
        ph=ph,
        tier=tool.tier.value,
        auth_at=now,
        expires_at=now + ttl,
        jkt=caller.jkt,
        agent=body.context.agent if body.context else None,
    )
    await deps.store.issue(token_hash(token), state, "granted", ttl)
    return Grant(
        transaction_id=txn,
        token=token,
        status="granted",
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
