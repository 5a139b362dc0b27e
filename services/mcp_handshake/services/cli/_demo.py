"""``mcp-handshake demo``: a scripted agent against the embedded stack."""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import jwt
from rich.console import Console
from rich.panel import Panel

from mcp_handshake.client import CallResult, HandshakeClient, HandshakeError
from mcp_handshake.shared.keys import generate_private_key
from mcp_handshake.shared.settings import Settings

from ..devhome import mint_session
from ..devstack import StackSpec
from ._stack import make_stack

console = Console()


def _show(res: CallResult) -> None:
    c = res.claims
    console.print(f"    result   {res.result}")
    console.print(
        f"    receipt  [green]verified[/green] txn={c['txn'][:8]}… tool={c['tool']} "
        f"tier={c['tier']} sub={c['sub']} ph={c['ph'][:19]}…"
    )


async def _expect_ok(title: str, action: Callable[[], Awaitable[CallResult]]) -> bool:
    console.print(f"[bold]▶ {title}[/bold]")
    try:
        _show(await action())
        return True
    except HandshakeError as exc:
        console.print(f"    [red]unexpected {exc.code}[/red]: {exc.message}")
        return False


async def _expect_refused(title: str, code: str, action: Callable[[], Awaitable[Any]]) -> bool:
    console.print(f"[bold]▶ {title}[/bold]")
    try:
        await action()
    except HandshakeError as exc:
        ok = exc.code == code
        mark = "[green]refused[/green]" if ok else f"[red]refused with {exc.code}[/red]"
        console.print(f"    {mark} {exc.code}: {exc.message}")
        return ok
    console.print("    [red]NOT refused[/red]")
    return False


async def _script(home: Path, nats_url: str) -> bool:
    alice = mint_session(home, "alice", roles=["billing"])
    bob = mint_session(home, "bob", roles=["billing"])
    carol = mint_session(home, "carol", roles=["support"])
    dan = mint_session(home, "dan", roles=["analyst"])
    now = int(time.time())
    forged = jwt.encode(
        {"iss": "https://idp.handshake.local", "aud": "mcp-handshake", "sub": "alice",
         "iat": now, "exp": now + 600, "roles": ["treasury"]},
        generate_private_key(), algorithm="EdDSA",
    )  # fmt: skip
    results: list[bool] = []
    async with (
        HandshakeClient(nats_url, session=alice) as a,
        HandshakeClient(nats_url, session=bob) as b,
        HandshakeClient(nats_url, session=carol) as c,
        HandshakeClient(nats_url, session=dan) as d,
        HandshakeClient(nats_url, session=forged) as f,
    ):
        names = ", ".join(t.name for t in await a.tools())
        console.print(f"[bold]▶ alice (billing) may use:[/bold] {names}")
        rate = {"base": "EUR", "quote": "USD"}
        results.append(await _expect_ok(
            "alice: payments.get_exchange_rate (public)",
            lambda: a.call("payments.get_exchange_rate", rate)))  # fmt: skip
        invoice = {"customer_id": "cus_8f3k2m9q", "amount": 250, "currency": "EUR",
                   "memo": "October consulting"}  # fmt: skip
        grant = await a.authorize("payments.create_invoice", invoice)
        console.print(
            f"[bold]▶ alice: authorize payments.create_invoice[/bold] → token for txn "
            f"{grant.transaction_id[:8]}…, tier {grant.tier}, expires in "
            f"{grant.expires_at - time.time():.0f}s"
        )
        results.append(
            await _expect_ok(
                "alice: execute it", lambda: a.execute(grant, "payments.create_invoice", invoice)
            )
        )
        results.append(
            await _expect_refused(
                "alice: replay the same token",
                "invalid_transaction",
                lambda: a.execute(grant, "payments.create_invoice", invoice),
            )
        )
        g2 = await a.authorize("payments.create_invoice", invoice)
        evil = {**invoice, "amount": 999}
        results.append(
            await _expect_refused(
                "alice: execute with the amount changed to 999",
                "invalid_transaction",
                lambda: a.execute(g2, "payments.create_invoice", evil),
            )
        )
        g3 = await a.authorize("payments.create_invoice", invoice)
        results.append(
            await _expect_refused(
                "bob: execute alice's token",
                "invalid_transaction",
                lambda: b.execute(g3, "payments.create_invoice", invoice),
            )
        )
        results.append(
            await _expect_refused(
                "anyone: authorize with a forged session (right claims, wrong key)",
                "unauthenticated",
                lambda: f.authorize("payments.send_payment", invoice),
            )
        )
        results.append(
            await _expect_refused(
                "alice: customers.get_customer without the support role",
                "forbidden",
                lambda: a.call("customers.get_customer", {"customer_id": "cus_8f3k2m9q"}),
            )
        )
        results.append(
            await _expect_ok(
                "carol (support): customers.get_customer (confidential)",
                lambda: c.call("customers.get_customer", {"customer_id": "cus_8f3k2m9q"}),
            )
        )
        results.append(
            await _expect_ok(
                "dan (analyst): reports.run_query 'sum(amount) / count()'",
                lambda: d.call("reports.run_query", {"expression": "sum(amount) / count()"}),
            )
        )
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
            console.print(f"stack up: NATS {stack.nats_url}, Redis {stack.redis_url}, "
                          f"target {stack.target_url}\n")  # fmt: skip
            ok = asyncio.run(_script(stack.home, stack.nats_url or ""))
        finally:
            stack.stop()
    console.print("\n[bold green]demo complete[/bold green]" if ok else "[red]demo failed[/red]")
    return 0 if ok else 1
