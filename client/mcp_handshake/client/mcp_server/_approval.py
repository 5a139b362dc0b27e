"""Waiting for a pending call's approval, with progress: the local MCP server's and the
gateway's ``/mcp`` loop (each asks for the status its own way)."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from mcp_handshake.shared.errors import ApprovalDenied
from mcp_handshake.shared.wire import StatusReply

__all__ = ["PROGRESS_EVERY_S", "Progress", "approved_within"]

#: ``(progress, total, message)``: an MCP progress notification, when the host asked.
Progress = Callable[[float, float | None, str | None], Awaitable[None]]

#: How often a waiting call reports progress (one status long-poll each).
PROGRESS_EVERY_S = 5.0


async def approved_within(
    tool: str,
    txn: str,
    wait_s: float,
    progress: Progress,
    status: Callable[[float], Awaitable[StatusReply]],
) -> bool:
    """Whether ``txn`` was approved within ``wait_s``; ``ApprovalDenied`` if refused.

    ``status(wait_s)`` long-polls the transaction's status for at most ``wait_s``."""
    start = time.monotonic()
    while True:
        waited = time.monotonic() - start
        await progress(waited, wait_s, f"{tool}: waiting for approval ({txn})")
        left = wait_s - waited
        if left <= 0:
            return False
        st = await status(min(left, PROGRESS_EVERY_S))
        if st.status in {"approved", "granted"}:
            return True
        if st.status != "pending_approval":
            by = f" by {st.decided_by}" if st.decided_by else ""
            raise ApprovalDenied(f"the operation was {st.status}{by}", transaction_id=txn)
