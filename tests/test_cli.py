"""The command line, as a user runs it against the running stack."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time

from mcp_handshake.services.dev.devstack import Stack


def cli(stack: Stack, *args: str, session: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **stack.env()}
    env.pop("HANDSHAKE_SESSION", None)
    if session:
        env["HANDSHAKE_SESSION"] = session
    return subprocess.run(
        [sys.executable, "-m", "mcp_handshake.services.dev.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_mint_bound_session_then_call_internal_tool(stack: Stack) -> None:
    minted = cli(stack, "token", "mint", "--sub", "cli-alice", "--role", "billing", "--bind-key")
    assert minted.returncode == 0, minted.stderr
    session = minted.stdout.strip()
    out = cli(stack, "call", "payments.list_invoices", "--params", '{"limit": 1}', session=session)
    assert out.returncode == 0, out.stderr
    body = json.loads(out.stdout)
    assert body["receipt"]["sub"] == "cli-alice" and body["receipt"]["tier"] == "internal"
    tools = cli(stack, "tools", session=session)
    assert "payments.create_invoice" in tools.stdout


def test_register_key_for_unbound_session(stack: Stack) -> None:
    session = cli(stack, "token", "mint", "--sub", "cli-erin", "--role", "billing").stdout.strip()
    refused = cli(stack, "call", "payments.list_invoices", session=session)
    assert refused.returncode == 1 and "validation_failed" in refused.stderr
    agent_key = str(stack.home / "keys" / "agent.pem")
    reg = cli(stack, "keys", "register", "--sub", "cli-erin", agent_key)
    assert reg.returncode == 0, reg.stderr
    ok = cli(stack, "call", "payments.list_invoices", session=session)
    assert ok.returncode == 0, ok.stderr
    revoked = cli(stack, "keys", "revoke", "--sub", "cli-erin", reg.stdout.strip())
    assert revoked.returncode == 0, revoked.stderr
    again = cli(stack, "call", "payments.list_invoices", session=session)
    assert again.returncode == 1 and "validation_failed" in again.stderr


def test_errors_are_one_line_without_traceback(stack: Stack) -> None:
    out = cli(stack, "call", "payments.list_invoices", session="garbage")
    assert out.returncode == 1
    assert "unauthenticated" in out.stderr and "Traceback" not in out.stderr
    out = cli(stack, "call", "payments.list_invoices", "--params", "[1", session="garbage")
    assert out.returncode == 2


def test_status_shows_every_worker_kind(stack: Stack) -> None:
    session = cli(stack, "token", "mint", "--sub", "cli-status").stdout.strip()
    rate = '{"base": "EUR", "quote": "USD"}'
    assert (
        cli(
            stack, "call", "payments.get_exchange_rate", "--params", rate, session=session
        ).returncode
        == 0
    )
    out = cli(stack, "status", "--json")
    assert out.returncode == 0, out.stderr
    snap = json.loads(out.stdout)
    up = {k: v["instances"] for k, v in snap["workers"].items()}
    assert up == {"authorize": 2, "execute": 2, "executor": 1, "approval": 2, "audit": 1}
    assert snap["workers"]["authorize"]["requests"] > 0
    assert isinstance(snap["approvals_pending"], int)
    assert isinstance(snap["audit_lag"], int)
    table = cli(stack, "status", "--once")
    assert table.returncode == 0 and "authorize" in table.stdout and "audit lag" in table.stdout


def test_audit_show_export_tail_and_verify(stack: Stack) -> None:
    env = {**os.environ, **stack.env()}
    with open(stack.home / "tail.out", "w") as sink:  # follows new events only
        tail = subprocess.Popen(
            [sys.executable, "-m", "mcp_handshake.services.dev.cli", "audit", "tail"],
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    try:
        time.sleep(2)
        session = cli(stack, "token", "mint", "--sub", "cli-audit").stdout.strip()
        out = cli(
            stack,
            "call",
            "payments.get_exchange_rate",
            "--params",
            '{"base": "EUR", "quote": "CHF"}',
            session=session,
        )
        assert out.returncode == 0, out.stderr
        txn = json.loads(out.stdout)["transaction_id"]
        deadline = time.monotonic() + 15
        show = cli(stack, "audit", "show", txn)
        while "receipt.issued" not in show.stdout and time.monotonic() < deadline:
            time.sleep(0.3)
            show = cli(stack, "audit", "show", txn)
    finally:
        tail.terminate()
        tail.wait(timeout=10)
    for kind in ("authorize.granted", "execute.intent", "execute.succeeded", "receipt.issued"):
        assert kind in show.stdout, show.stdout
    assert txn in (stack.home / "tail.out").read_text()
    exported = [
        json.loads(x) for x in cli(stack, "audit", "export", "--since", "600").stdout.splitlines()
    ]
    assert {e["kind"] for e in exported if e.get("txn") == txn} >= {"receipt.issued"}
    verified = cli(stack, "audit", "verify")
    assert verified.returncode == 0 and "OK" in verified.stdout, verified.stdout


async def test_approvals_show_prints_agent_text_literally(stack: Stack) -> None:
    from mcp_handshake.services.dev.devhome import mint_session
    from tests.test_client import agent

    reason = "[link=http://evil.example]urgent[/link] pay \u202egnp.exe"
    async with agent(stack, "tess-show", "treasury") as hs:
        pending = await hs.submit(
            "payments.send_payment",
            {"to_account": "acct_zz1234", "amount": 700, "currency": "EUR"},
            context={"agent": "[bold]bot[/bold]", "reason": reason},
        )
    victor = mint_session(stack.home, "victor", roles=["approver"])
    deadline = time.monotonic() + 10
    shown = cli(stack, "approvals", "show", pending.transaction_id, session=victor)
    while shown.returncode != 0 and time.monotonic() < deadline:
        await asyncio.sleep(0.3)
        shown = cli(stack, "approvals", "show", pending.transaction_id, session=victor)
    assert shown.returncode == 0, shown.stderr
    assert "[link=http://evil.example]" in shown.stdout and "[bold]bot[/bold]" in shown.stdout
    assert "\u202e" not in shown.stdout and "\\u202e" in shown.stdout
    assert "*******1234" in shown.stdout  # the preview masks the account
