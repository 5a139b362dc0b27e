"""One MCP tool call: the full handshake, approval waits with progress, follow-ups.

A restricted call waits for its approval at most ``wait_bound_s`` (a host
gives up on a tool call after about a minute), reporting progress as it waits.
Past the bound it answers "pending approval" and keeps the call, keyed by the
session's user and transaction id (``_pending.PendingStore``: memory, and the
user's own 0600 files so a new process of the same user can finish it), for
``handshake_wait`` to pick up: waiting again, then running the operation once
approved.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import jwt
import mcp_types as types
from nats.errors import Error as NatsError
from nats.errors import MaxPayloadError

from mcp_handshake.client import (
    ApprovalDenied,
    HandshakeClient,
    HandshakeError,
    InternalError,
    InvalidParams,
    InvalidTransaction,
    PayloadTooLarge,
    PendingCall,
    SessionProvider,
    Unauthenticated,
    Unavailable,
    UnknownTool,
)

from ._approval import Progress, approved_within
from ._catalog import as_mcp_tools, own_tools
from ._names import HOST_NAME, OWN_TOOLS, tool_name
from ._pending import PendingStore
from ._results import error_result, pending_result, success_result, value_result

__all__ = ["Calls", "Progress"]

log = logging.getLogger("mcp_handshake.mcp")


class Calls:
    """The tool catalog and the calls of one session, over one ``HandshakeClient``."""

    def __init__(
        self,
        client: HandshakeClient,
        wait_bound_s: float = 50.0,
        pending: PendingStore | None = None,
        session: SessionProvider | None = None,
    ) -> None:
        """``session``: the client's session provider, whose user owns pending calls
        (``None``: one anonymous owner, for a server of one session)."""
        self._client = client
        self._bound = wait_bound_s
        self._pending = pending or PendingStore()
        self._session = session

    async def _user(self) -> str:
        """The session's ``sub`` (read, not verified: the mediator verifies the session
        and that the token is this user's at execute)."""
        if self._session is None:
            return ""
        try:
            sub = jwt.decode(await self._session.token(), options={"verify_signature": False})
        except jwt.PyJWTError:
            raise Unauthenticated("session token malformed") from None
        return str(sub.get("sub", ""))

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
        except MaxPayloadError:  # over what the bus carries at all: nothing was sent
            return error_result(PayloadTooLarge("the arguments are too large to send"))
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
        user, txn = await self._user(), pending.transaction_id
        if pending.grant.status == "pending_approval":
            try:
                approved = await self._approved(pending, wait_s, progress)
            except ApprovalDenied:
                self._pending.drop(user, txn)
                raise
            except (asyncio.CancelledError, Exception):
                # The host gave up on the call, or the wait failed (NATS away): the call
                # is still pending at the mediator, and handshake_wait can pick it up.
                self._pending.put(user, pending)
                raise
            if not approved:
                self._pending.put(user, pending)
                return pending_result(pending, wait_s)
        # The token is spent by this attempt whatever its outcome.
        self._pending.drop(user, txn)
        return success_result(
            await self._client.execute(pending.grant, pending.tool, pending.params)
        )

    async def _approved(self, pending: PendingCall, wait_s: float, progress: Progress) -> bool:
        """Whether the call was approved within ``wait_s``; ``ApprovalDenied`` if refused."""
        txn = pending.transaction_id
        return await approved_within(
            pending.tool, txn, wait_s, progress, lambda w: self._client.status(txn, wait_s=w)
        )

    async def _status(self, args: dict[str, Any]) -> types.CallToolResult:
        txn = _transaction_id(args)
        st = await self._client.status(txn)
        answer: dict[str, Any] = {
            "transaction_id": st.transaction_id,
            "status": st.status,
            "expires_at": st.expires_at,
            # Whether handshake_wait can run it: this server holds the call.
            "waiting_here": self._pending.get(await self._user(), txn) is not None,
        }
        if st.decided_by:
            answer["decided_by"] = st.decided_by
        return value_result(answer)

    async def _wait(self, args: dict[str, Any], progress: Progress) -> types.CallToolResult:
        txn = _transaction_id(args)
        wait_s = args.get("wait_s", self._bound)
        # NaN (which JSON-RPC parsers accept) would never run out: the wait would poll forever.
        if isinstance(wait_s, bool) or not isinstance(wait_s, int | float) or not wait_s >= 0:
            raise InvalidParams("wait_s must be a number of seconds, 0 or more")
        pending = self._pending.get(await self._user(), txn)
        if pending is None:
            raise InvalidTransaction("no pending call with this transaction id here",
                                     transaction_id=txn)  # fmt: skip
        return await self._finish(pending, float(min(wait_s, self._bound)), progress)


def _transaction_id(args: dict[str, Any]) -> str:
    txn = args.get("transaction_id")
    if not isinstance(txn, str) or not 0 < len(txn) <= 64:
        raise InvalidParams("transaction_id must be the id a pending result gave")
    return txn
