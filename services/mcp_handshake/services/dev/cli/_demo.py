"""``mcp-handshake demo``: a scripted agent against the embedded stack."""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

import jwt
from rich.panel import Panel

from mcp_handshake.client import HandshakeClient, ProofKey
from mcp_handshake.services.dev.cli._demo_steps import (
    attacks,
    confidential,
    console,
    public_and_internal,
    restricted,
)
from mcp_handshake.services.dev.cli._stack import make_stack
from mcp_handshake.services.dev.devhome import mint_session
from mcp_handshake.services.dev.devstack import Stack, StackSpec
from mcp_handshake.shared.keys import generate_private_key
from mcp_handshake.shared.natsconn import connect_options, redact
from mcp_handshake.shared.settings import Settings


def _agent(stack: Stack, sub: str, *roles: str) -> HandshakeClient:
    """A user's agent: its own NATS identity and proof key, the user's session bound to it."""
    key = ProofKey(generate_private_key())
    session = mint_session(stack.home, sub, roles=list(roles), jkt=key.thumbprint)
    return HandshakeClient(
        stack.nats_url or "",
        session=session,
        proof_key=key,
        approval_timeout_s=30,
        connect_options=_identity(stack, sub),
    )


def _identity(stack: Stack, sub: str) -> dict[str, Any]:
    """A NATS identity of the agent's own on our stack (an existing server's: the settings')."""
    if not stack.nats_port:
        options = connect_options(stack.settings(), f"demo-{sub}")
    else:
        options = stack.add_agent(f"agent-{sub}")
    options.pop("servers", None)
    return options


async def _script(stack: Stack) -> bool:
    home = stack.home
    now = int(time.time())
    forged = jwt.encode(
        {"iss": "https://idp.handshake.local", "aud": "mcp-handshake", "sub": "alice",
         "iat": now, "exp": now + 600, "roles": ["treasury"]},
        generate_private_key(), algorithm="EdDSA",
    )  # fmt: skip
    victor = mint_session(home, "victor", roles=["approver"])
    async with (
        _agent(stack, "alice", "billing") as a,
        _agent(stack, "bob", "billing") as b,
        _agent(stack, "carol", "support") as c,
        _agent(stack, "dan", "analyst") as d,
        _agent(stack, "tess", "treasury") as t,
        HandshakeClient(
            stack.nats_url or "", session=forged, connect_options=_identity(stack, "mallory")
        ) as f,
    ):
        names = ", ".join(t.name for t in await a.tools())
        console.print(f"[bold]▶ alice (billing) may use:[/bold] {names}")
        first, used = await public_and_internal(a)
        results = [
            *first,
            *await attacks(a, b, f, used),
            *await confidential(c, d),
            *await restricted(stack, t, victor),
        ]
    return all(results)


def run_demo() -> int:
    settings = Settings.from_env()
    with tempfile.TemporaryDirectory(prefix="handshake-demo-") as tmp:
        if not settings.external_servers:
            settings = settings.with_(home=Path(tmp))
        stack = make_stack(settings, StackSpec())
        console.print(Panel("mcp-handshake demo: an agent acting for users, never holding keys"))
        try:
            asyncio.run(stack.start())
            console.print(f"stack up: NATS {redact(stack.nats_url or '')}, "
                          f"Redis {redact(stack.redis_url or '')}, "
                          f"target {stack.target_url}\n")  # fmt: skip
            ok = asyncio.run(_script(stack))
        finally:
            stack.stop()
    console.print("\n[bold green]demo complete[/bold green]" if ok else "[red]demo failed[/red]")
    console.print(
        "agents that speak only HTTP use the gateway (docs/gateway.md), and approvers and"
        " auditors work in the web console (docs/console.md): `up` prints both URLs"
    )
    return 0 if ok else 1
