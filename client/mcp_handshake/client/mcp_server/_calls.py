"""One MCP tool call: the full handshake, approval waits with progress, follow-ups.

A restricted call waits for its approval at most ``wait_bound_s`` (a host
gives up on a tool call after about a minute), reporting progress as it waits.
Past the bound it answers "pending approval" and keeps the call in memory, keyed
by transaction id, for ``handshake_wait`` to pick up: waiting again, then running
the operation once approved.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import mcp_types as types
from nats.errors import Error as NatsError

from mcp_handshake.client import (
    ApprovalDenied,
    HandshakeClient,
    HandshakeError,
    InternalError,
    InvalidParams,
    InvalidTransaction,
    PendingCall,
    Unavailable,
    UnknownTool,
)

from ._catalog import as_mcp_tools, own_tools
from ._names import HOST_NAME, OWN_TOOLS, tool_name
from ._results import error_result, pending_result, success_result, value_result

__all__ = ["Calls", "Progress"]

log = logging.getLogger("mcp_handshake.mcp")

#: ``(progress, total, message)``: an MCP progress notification, when the host asked.
Progress = Callable[[float, float | None, str | None], Awaitable[None]]

#: How often a waiting call reports progress (one status long-poll each).
PROGRESS_EVERY_S = 5.0
#: Pending calls kept for ``handshake_wait``; the oldest go first past this.
MAX_PENDING = 1000


class Calls:
    """The tool catalog and the calls of one session, over one ``HandshakeClient``."""

    def __init__(self, client: HandshakeClient, wait_bound_s: float = 50.0) -> None:
        self._client = client
        self._bound = wait_bound_s
        self._pending: dict[str, PendingCall] = {}

    async def tools(self) -> list[types.Tool]:
        """The tools this session may use, plus ``handshake_status`` and ``handshake_wait``."""
        tools, _ = as_mcp_tools(await self._client.tools())
        return [*tools, *own_tools(self._bound)]

    async def call(
        self, name: str, args: dict[str, Any], progress: Progress
    ) -> types.CallToolResult:
        """Run one tool call; every failure is a tool error, never an exception."""
        try:
            if name == "handshake_status":
                return await self._status(args)
            if name == "handshake_wait":
                return await self._wait(args, progress)
            return await self._call(name, args, progress)
        except HandshakeError as exc:
            return error_result(exc)
        except NatsError:
            return error_result(Unavailable("the mediator cannot be reached over NATS"))
        except Exception:
            # A bug of ours: the log gets the details, the host a short message.
            log.exception("tool call %s failed", name[:64])
            return error_result(InternalError("the MCP server failed on this call"))

    async def _call(
        self, name: str, args: dict[str, Any], progress: Progress
    ) -> types.CallToolResult:
        if not HOST_NAME.fullmatch(name) or name in OWN_TOOLS:
            raise UnknownTool("no such tool")
        pending = await self._client.submit(tool_name(name), args)
        return await self._finish(pending, self._bound, progress)

    async def _finish(
        self, pending: PendingCall, wait_s: float, progress: Progress
    ) -> types.CallToolResult:
        if pending.grant.status == "pending_approval":
            try:
                approved = await self._approved(pending, wait_s, progress)
            except ApprovalDenied:
                raise
            except (asyncio.CancelledError, Exception):
                # The host gave up on the call, or the wait failed (NATS away): the call
                # is still pending at the mediator, and handshake_wait can pick it up.
                self._remember(pending)
                raise
            if not approved:
                self._remember(pending)
                return pending_result(pending, wait_s)
        # The token is spent by this attempt whatever its outcome.
        self._pending.pop(pending.transaction_id, None)
        return success_result(
            await self._client.execute(pending.grant, pending.tool, pending.params)
        )

    async def _approved(self, pending: PendingCall, wait_s: float, progress: Progress) -> bool:
        """Whether the call was approved within ``wait_s``; ``ApprovalDenied`` if refused."""
        txn = pending.transaction_id
        start = time.monotonic()
        while True:
            waited = time.monotonic() - start
            await progress(waited, wait_s, f"{pending.tool}: waiting for approval ({txn})")
            left = wait_s - waited
            if left <= 0:
                return False
            st = await self._client.status(txn, wait_s=min(left, PROGRESS_EVERY_S))
            if st.status in {"approved", "granted"}:
                return True
            if st.status != "pending_approval":
                self._pending.pop(txn, None)
                by = f" by {st.decided_by}" if st.decided_by else ""
                raise ApprovalDenied(f"the operation was {st.status}{by}", transaction_id=txn)

    async def _status(self, args: dict[str, Any]) -> types.CallToolResult:
        txn = _transaction_id(args)
        st = await self._client.status(txn)
        answer: dict[str, Any] = {
            "transaction_id": st.transaction_id,
            "status": st.status,
            "expires_at": st.expires_at,
            # Whether handshake_wait can run it: this server holds the call.
            "waiting_here": txn in self._pending,
        }
        if st.decided_by:
            answer["decided_by"] = st.decided_by
        return value_result(answer)

    async def _wait(self, args: dict[str, Any], progress: Progress) -> types.CallToolResult:
        txn = _transaction_id(args)
        wait_s = args.get("wait_s", self._bound)
        if isinstance(wait_s, bool) or not isinstance(wait_s, int | float) or wait_s < 0:
            raise InvalidParams("wait_s must be a number of seconds, 0 or more")
        pending = self._pending.get(txn)
        if pending is None:
            raise InvalidTransaction("no pending call with this transaction id here",
                                     transaction_id=txn)  # fmt: skip
        return await self._finish(pending, min(float(wait_s), self._bound), progress)

    def _remember(self, pending: PendingCall) -> None:
        now = time.time()
        for txn in [t for t, p in self._pending.items() if p.grant.expires_at < now]:
            del self._pending[txn]
        self._pending[pending.transaction_id] = pending
        while len(self._pending) > MAX_PENDING:
            del self._pending[next(iter(self._pending))]


def _transaction_id(args: dict[str, Any]) -> str:
    txn = args.get("transaction_id")
    if not isinstance(txn, str) or not 0 < len(txn) <= 64:
        raise InvalidParams("transaction_id must be the id a pending result gave")
    return txn
