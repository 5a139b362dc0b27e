"""One ``/mcp`` tool call: the full handshake, as the verified user of that request.

Each call is sent to the workers with the request's own session (never one of the
gateway's) and, above the public tier, the request's own DPoP proof, which the
execute worker verifies against the ``/mcp`` URI (``Handshake-DPoP-Htu``). A
restricted call waits for approval with progress; past the bound it answers
"pending approval" and is kept, by user, for ``handshake_wait``: any session of the
same user (another MCP session, a new connection) may finish it, no other user can
see it. Pending calls live in this gateway process (``MAX_PENDING``, until their
approval expires).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, TypeVar

import mcp_types as types
import msgspec

from mcp_handshake.client import CallResult, PendingCall
from mcp_handshake.client.mcp_server import as_mcp_tools, tool_name
from mcp_handshake.client.mcp_server._approval import Progress, approved_within
from mcp_handshake.client.mcp_server._catalog import own_tools
from mcp_handshake.client.mcp_server._names import HOST_NAME, OWN_TOOLS
from mcp_handshake.client.mcp_server._results import (
    error_result,
    pending_result,
    success_result,
    value_result,
)
from mcp_handshake.services.core.dpop import DPOP_HEADER, DPOP_HTU_HEADER, DPOP_HTU_TAG_HEADER
from mcp_handshake.services.gateway.forward import Gateway
from mcp_handshake.services.gateway.mcp_auth import McpCaller
from mcp_handshake.shared.errors import (
    ApprovalDenied,
    HandshakeError,
    InternalError,
    InvalidParams,
    InvalidTransaction,
    OutcomeUnknown,
    PayloadTooLarge,
    UnknownTool,
    ValidationFailed,
)
from mcp_handshake.shared.protocol import AUTHORIZATION_HEADER, TOKEN_HEADER
from mcp_handshake.shared.wire import ExecuteReply, Grant, StatusReply, ToolsReply

__all__ = ["MAX_PENDING", "MAX_PENDING_PER_USER", "GatewayCalls", "Progress"]

log = logging.getLogger(__name__)
R = TypeVar("R")

#: Pending calls kept for ``handshake_wait`` (all users); the oldest go first past this.
MAX_PENDING = 10_000
#: Calls one user may leave pending here: past it their own oldest are forgotten, so one
#: user cannot push other users' calls out of :data:`MAX_PENDING`.
MAX_PENDING_PER_USER = 100
_DPOP_NEEDED = (
    "{tool} is {tier}-tier: it needs a DPoP-bound session (cnf.jkt) and a DPoP proof "
    "(RFC 9449) on this MCP request: header 'DPoP', htm POST, htu {htu}, ath of the "
    "session. Nothing ran."
)


class GatewayCalls:
    """The tools and calls of ``/mcp``: every method takes the request's caller."""

    def __init__(self, gateway: Gateway, wait_bound_s: float = 50.0) -> None:
        self._gw = gateway
        self._bound = wait_bound_s
        self._pending: dict[tuple[str, str], PendingCall] = {}

    async def _forward(
        self, who: McpCaller, subject: str, body: Any, reply: type[R], **kw: Any
    ) -> R:
        headers = {AUTHORIZATION_HEADER: f"Bearer {who.session}", **kw.pop("headers", {})}
        data = msgspec.json.encode(body)
        if len(data) > self._gw.options.max_body:
            raise PayloadTooLarge(f"request over {self._gw.options.max_body} bytes")
        return await self._gw.forward(subject, data, reply, headers, **kw)

    async def tools(self, who: McpCaller) -> list[types.Tool]:
        """The tools this user may use, plus ``handshake_status`` and ``handshake_wait``."""
        reply = await self._forward(who, self._gw.subjects.tools, {}, ToolsReply)
        tools, _ = as_mcp_tools(reply.tools)
        return [*tools, *own_tools(self._bound)]

    async def call(
        self, who: McpCaller, name: str, args: dict[str, Any], progress: Progress
    ) -> types.CallToolResult:
        """Run one tool call; every failure is a tool error, never an exception."""
        try:
            if name == "handshake_status":
                return await self._status(who, args)
            if name == "handshake_wait":
                return await self._wait(who, args, progress)
            return await self._call(who, name, args, progress)
        except HandshakeError as exc:
            return error_result(exc)
        except Exception:
            log.exception("an MCP tool call failed in the gateway")
            return error_result(InternalError("the gateway failed on this call"))

    async def _call(
        self, who: McpCaller, name: str, args: dict[str, Any], progress: Progress
    ) -> types.CallToolResult:
        if not HOST_NAME.fullmatch(name) or name in OWN_TOOLS:
            raise UnknownTool("no such tool")
        tool = tool_name(name)
        if who.dpop is None:
            await self._refuse_without_dpop(who, tool)
        body = {"tool": tool, "params": args}
        grant = await self._forward(who, self._gw.subjects.authorize, body, Grant)
        return await self._finish(who, PendingCall(tool, args, grant), self._bound, progress)

    async def _refuse_without_dpop(self, who: McpCaller, tool: str) -> None:
        """Above the public tier a call needs the request's DPoP proof: say so before
        anything is authorized (no approval request for a call that cannot run)."""
        reply = await self._forward(who, self._gw.subjects.tools, {}, ToolsReply)
        tier = next((t.tier for t in reply.tools if t.name == tool), "public")
        if tier != "public":
            raise ValidationFailed(_DPOP_NEEDED.format(tool=tool, tier=tier, htu=who.htu))

    async def _finish(
        self, who: McpCaller, pending: PendingCall, wait_s: float, progress: Progress
    ) -> types.CallToolResult:
        key = (who.sub, pending.transaction_id)
        if pending.grant.status == "pending_approval":
            try:
                approved = await self._approved(who, pending, wait_s, progress)
            except ApprovalDenied:
                self._pending.pop(key, None)
                raise
            except (asyncio.CancelledError, Exception):
                self._remember(key, pending)  # the host gave up, or NATS did: wait again later
                raise
            if not approved:
                self._remember(key, pending)
                return pending_result(pending, wait_s)
        if pending.grant.tier != "public" and who.dpop is None:
            self._remember(key, pending)
            raise ValidationFailed(_DPOP_NEEDED.format(tool=pending.tool,
                                   tier=pending.grant.tier, htu=who.htu))  # fmt: skip
        self._pending.pop(key, None)  # the token is spent by this attempt, whatever happens
        return success_result(await self._execute(who, pending))

    async def _execute(self, who: McpCaller, pending: PendingCall) -> CallResult:
        grant = pending.grant
        headers = {TOKEN_HEADER: grant.token}
        if who.dpop is not None:
            key = self._gw.options.gateway_key
            if key is None:
                raise ValidationFailed("this gateway has no gateway key; DPoP is refused")
            # The /mcp URL is the gateway's word only under the key it shares with execute.
            headers |= {DPOP_HEADER: who.dpop, DPOP_HTU_HEADER: who.htu,
                        DPOP_HTU_TAG_HEADER: key.tag(who.htu, who.dpop)}  # fmt: skip
        body = {"transaction_id": grant.transaction_id, "tool": pending.tool,
                "params": pending.params}  # fmt: skip
        reply = await self._forward(who, self._gw.subjects.execute, body, ExecuteReply,
                                    headers=headers, timeout_error=OutcomeUnknown)  # fmt: skip
        # The receipt goes to the host as is; it verifies it with GET /v1/keys.
        return CallResult(reply.transaction_id, reply.result, reply.receipt, {"tier": grant.tier})

    async def _approved(
        self, who: McpCaller, pending: PendingCall, wait_s: float, progress: Progress
    ) -> bool:
        """Whether the call was approved within ``wait_s``; ``ApprovalDenied`` if refused."""
        txn = pending.transaction_id
        return await approved_within(
            pending.tool, txn, wait_s, progress, lambda w: self._status_of(who, txn, w)
        )

    async def _status_of(self, who: McpCaller, txn: str, wait_s: float = 0) -> StatusReply:
        body: dict[str, Any] = {"transaction_id": txn}
        if wait_s:
            body["wait_s"] = wait_s
        timeout = max(self._gw.options.timeout_s, wait_s + 5)
        return await self._forward(who, self._gw.subjects.status, body, StatusReply,
                                   timeout=timeout)  # fmt: skip

    async def _status(self, who: McpCaller, args: dict[str, Any]) -> types.CallToolResult:
        txn = _transaction_id(args)
        st = await self._status_of(who, txn)  # the workers show a user only their own
        answer: dict[str, Any] = {"transaction_id": st.transaction_id, "status": st.status,
                                  "expires_at": st.expires_at,
                                  "waiting_here": (who.sub, txn) in self._pending}  # fmt: skip
        if st.decided_by:
            answer["decided_by"] = st.decided_by
        return value_result(answer)

    async def _wait(
        self, who: McpCaller, args: dict[str, Any], progress: Progress
    ) -> types.CallToolResult:
        txn = _transaction_id(args)
        wait_s = args.get("wait_s", self._bound)
        # NaN (which JSON-RPC parsers accept) would never run out: the wait would poll forever.
        if isinstance(wait_s, bool) or not isinstance(wait_s, int | float) or not wait_s >= 0:
            raise InvalidParams("wait_s must be a number of seconds, 0 or more")
        pending = self._pending.get((who.sub, txn))
        if pending is None:
            raise InvalidTransaction("no pending call of yours with this transaction id here",
                                     transaction_id=txn)  # fmt: skip
        return await self._finish(who, pending, float(min(wait_s, self._bound)), progress)

    def _remember(self, key: tuple[str, str], pending: PendingCall) -> None:
        now = time.time()
        for old in [k for k, p in self._pending.items() if p.grant.expires_at < now]:
            del self._pending[old]
        self._pending.pop(key, None)  # re-remembered: now the newest
        self._pending[key] = pending
        mine = [k for k in self._pending if k[0] == key[0]]
        for old in mine[: max(0, len(mine) - MAX_PENDING_PER_USER)]:
            del self._pending[old]
        while len(self._pending) > MAX_PENDING:
            del self._pending[next(iter(self._pending))]


def _transaction_id(args: dict[str, Any]) -> str:
    txn = args.get("transaction_id")
    if not isinstance(txn, str) or not 0 < len(txn) <= 64:
        raise InvalidParams("transaction_id must be the id a pending result gave")
    return txn
