"""``mcp-handshake approvals``: the human side of the restricted tier, over NATS."""

from __future__ import annotations

import json
import time
from typing import Any

from rich.console import Console

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
            f"[bold]{a.transaction_id}[/bold] {a.tool} by {a.sub}  "
            f"{a.approvals}/{a.quorum} approvals, expires in {left:.0f}s"
            + (f"  [yellow]({a.escalated})[/yellow]" if a.escalated else "")
        )


async def show(hs: HandshakeClient, txn: str) -> None:
    for a in await hs.approvals():
        if a.transaction_id == txn:
            console.print(f"[bold]{a.tool}[/bold] requested by {a.sub}")
            if a.agent or a.reason:
                console.print(f"agent: {a.agent or '-'}  reason: {a.reason or '-'}")
            console.print(json.dumps(a.preview, indent=2))
            console.print(f"preview hash {a.preview_hash}")
            console.print(f"{a.approvals}/{a.quorum} approvals")
            return
    raise InvalidTransaction("no pending approval with this id that you may decide")


async def decide(hs: HandshakeClient, txn: str, decision: str, reason: str | None) -> Any:
    reply = await hs.decide(txn, decision, reason)
    console.print(f"{reply.transaction_id}: {reply.status} ({reply.approvals}/{reply.quorum})")
    return reply
