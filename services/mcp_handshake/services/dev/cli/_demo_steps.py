"""The demo's steps: each tier and attack, shown as it runs."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

from rich.console import Console
from rich.markup import escape

from mcp_handshake.client import CallResult, HandshakeClient, HandshakeError
from mcp_handshake.services.dev.devstack import Stack
from mcp_handshake.shared.wire import Grant

console = Console()


def _show(res: CallResult) -> None:
    c = res.claims
    console.print(f"    result   {escape(str(res.result))}")
    approved = ", ".join(a["by"] for a in c.get("approvals", [])) or "-"
    console.print(
        f"    receipt  [green]verified[/green] txn={c['txn'][:8]}… tool={c['tool']} "
        f"tier={c['tier']} sub={c['sub']} approvals={approved}"
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


async def _cli_decide(stack: Stack, approver_session: str, txn: str, decision: str) -> None:
    """A human approver at the command line: ``mcp-handshake approvals approve|deny TXN``."""
    env = {**stack.env(), "HANDSHAKE_SESSION": approver_session}
    argv = [sys.executable, "-m", "mcp_handshake.services.dev.cli", "approvals", decision, txn,
            "--reason", "checked with the requester"]  # fmt: skip
    console.print(f"    [dim]$ mcp-handshake approvals {decision} {txn[:8]}…  (as victor)[/dim]")
    proc = await asyncio.create_subprocess_exec(
        *argv, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    out, _ = await proc.communicate()
    for line in out.decode().splitlines():
        console.print(f"    [dim]{line}[/dim]")


async def _pending_then(
    stack: Stack, hs: HandshakeClient, approver: str, params: dict[str, Any], decision: str
) -> CallResult:
    pending = await hs.submit("payments.send_payment", params)
    console.print(f"    status {pending.grant.status}, txn {pending.transaction_id[:8]}…")
    waiting = asyncio.create_task(hs.wait(pending))
    st = await hs.status(pending.transaction_id, wait_s=2)  # the confirmation agent goes first
    console.print(f"    confirmation agent: passed to humans ({st.status})")
    await _cli_decide(stack, approver, pending.transaction_id, decision)
    return await waiting


INVOICE = {"customer_id": "cus_8f3k2m9q", "amount": 250, "currency": "EUR",
           "memo": "October consulting"}  # fmt: skip


async def public_and_internal(a: HandshakeClient) -> tuple[list[bool], Grant]:
    """Returns the results and the grant it executed (replayed next)."""
    results: list[bool] = []
    console.rule("public and internal tiers")
    rate = {"base": "EUR", "quote": "USD"}
    results.append(
        await _expect_ok(
            "alice: payments.get_exchange_rate (public)",
            lambda: a.call("payments.get_exchange_rate", rate),
        )
    )
    results.append(
        await _expect_ok(
            "alice: payments.list_invoices (internal: proof of possession signed by her key)",
            lambda: a.call("payments.list_invoices", {"status": "open", "limit": 5}),
        )
    )
    invoice = INVOICE
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
    return results, grant


async def attacks(
    a: HandshakeClient, b: HandshakeClient, f: HandshakeClient, grant: Grant
) -> list[bool]:
    results: list[bool] = []
    invoice = INVOICE
    console.rule("attacks")
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
            "alice's agent, hijacked: execute with the amount changed to 999 "
            "(token and proof cover 250)",
            "validation_failed",
            lambda: a.execute(g2, "payments.create_invoice", evil),
        )
    )
    results.append(
        await _expect_refused(
            "alice: then the original params with that token (burnt by the attempt)",
            "invalid_transaction",
            lambda: a.execute(g2, "payments.create_invoice", invoice),
        )
    )
    g3 = await a.authorize("payments.create_invoice", invoice)
    results.append(
        await _expect_refused(
            "bob: execute alice's token (his own key, his own session)",
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
    return results


async def confidential(c: HandshakeClient, d: HandshakeClient) -> list[bool]:
    results: list[bool] = []
    console.rule("confidential tier")
    results.append(
        await _expect_ok(
            "carol (support): customers.get_customer (result masked before the receipt)",
            lambda: c.call("customers.get_customer", {"customer_id": "cus_8f3k2m9q"}),
        )
    )
    results.append(
        await _expect_refused(
            "carol: customers.get_customer with a path traversal id",
            "validation_failed",
            lambda: c.call("customers.get_customer", {"customer_id": "../../admin"}),
        )
    )
    results.append(
        await _expect_ok(
            "dan (analyst): reports.run_query 'sum(amount) / count()' (AST-checked)",
            lambda: d.call("reports.run_query", {"expression": "sum(amount) / count()"}),
        )
    )
    results.append(
        await _expect_refused(
            "dan: reports.run_query \"__import__('os').system('id')\"",
            "validation_failed",
            lambda: d.call("reports.run_query", {"expression": "__import__('os').system('id')"}),
        )
    )
    return results


async def restricted(stack: Stack, t: HandshakeClient, victor: str) -> list[bool]:
    results: list[bool] = []
    console.rule("restricted tier")
    results.append(
        await _expect_ok(
            "tess (treasury): send 50 EUR to a known account (the confirmation agent approves)",
            lambda: t.call(
                "payments.send_payment",
                {"to_account": "acct_4f9d2a", "amount": 50, "currency": "EUR"},
            ),
        )
    )
    console.print("[bold]▶ tess: send 2,500 EUR (above the automatic limit)[/bold]")
    try:
        res = await _pending_then(
            stack,
            t,
            victor,
            {"to_account": "acct_4f9d2a", "amount": 2500, "currency": "EUR"},
            "approve",
        )
        _show(res)
        results.append(res.claims["approvals"][0]["by"] == "victor")
    except HandshakeError as exc:
        console.print(f"    [red]unexpected {exc.code}[/red]: {exc.message}")
        results.append(False)
    console.print("[bold]▶ tess: send 900 EUR to an unknown account[/bold]")
    try:
        await _pending_then(
            stack,
            t,
            victor,
            {"to_account": "acct_zz9999", "amount": 900, "currency": "EUR"},
            "deny",
        )
        console.print("    [red]NOT refused[/red]")
        results.append(False)
    except HandshakeError as exc:
        console.print(f"    [green]refused[/green] {exc.code}: {exc.message}")
        results.append(exc.code == "approval_denied")
    results.append(
        await _expect_refused(
            "tess: send 75,000 EUR (the confirmation agent refuses)",
            "approval_denied",
            lambda: t.call(
                "payments.send_payment",
                {"to_account": "acct_4f9d2a", "amount": 75000, "currency": "EUR"},
            ),
        )
    )
    return results
