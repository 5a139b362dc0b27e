"""``mcp-handshake approvals``: the human side of the restricted tier, over NATS."""

from __future__ import annotations

import json
import time
import unicodedata
from typing import Any

from rich.console import Console
from rich.markup import escape

from mcp_handshake.client import HandshakeClient
from mcp_handshake.shared.errors import InvalidTransaction

console = Console()


async def list_pending(hs: HandshakeClient) -> None:
    items = await hs.approvals()
    if not items:
        console.print("nothing waiting for you")
    for a in items:
        left = a.expires_at - time.time()
        console.print(
            f"[bold]{escape(a.transaction_id)}[/bold] {escape(a.tool)} by {escape(a.sub)}  "
            f"{a.approvals}/{a.quorum} approvals, expires in {left:.0f}s"
            + (f"  [yellow]({escape(a.escalated)})[/yellow]" if a.escalated else "")
        )


def _visible(text: str) -> str:
    """Control and invisible format characters as escapes, so nothing hides in a reason."""
    return "".join(
        ch if unicodedata.category(ch) not in {"Cc", "Cf"} else ch.encode("unicode_escape").decode()
        for ch in text
    )


async def show(hs: HandshakeClient, txn: str) -> None:
    for a in await hs.approvals():
        if a.transaction_id == txn:
            # Everything here came from the requester or its agent: printed as text,
            # never as console markup, with control characters made visible.
            console.print(f"[bold]{escape(a.tool)}[/bold] requested by {escape(a.sub)}")
            if a.agent or a.reason:
                console.print(
                    "[yellow]written by the requester, unverified:[/yellow] "
                    f"agent: {escape(_visible(a.agent or '-'))}  "
                    f"reason: {escape(_visible(a.reason or '-'))}"
                )
            console.print(escape(json.dumps(a.preview, indent=2, ensure_ascii=True)))
            console.print(f"preview hash {escape(a.preview_hash)}")
            console.print(f"{a.approvals}/{a.quorum} approvals")
            return
    raise InvalidTransaction("no pending approval with this id that you may decide")


async def decide(hs: HandshakeClient, txn: str, decision: str, reason: str | None) -> Any:
    reply = await hs.decide(txn, decision, reason)
    console.print(f"{reply.transaction_id}: {reply.status} ({reply.approvals}/{reply.quorum})")
    return reply
