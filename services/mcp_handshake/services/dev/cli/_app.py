"""``mcp-handshake``: run workers and the dev stack, mint dev sessions, act as an agent."""

from __future__ import annotations

import asyncio
import importlib
import json
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from mcp_handshake.shared.errors import HandshakeError
from mcp_handshake.shared.settings import AGENT_KEY_FILE, Settings

app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__)
token_app = typer.Typer(no_args_is_help=True, help="Session tokens from the dev identity provider.")
app.add_typer(token_app, name="token")
keys_app = typer.Typer(no_args_is_help=True, help="Agents' proof-of-possession keys.")
app.add_typer(keys_app, name="keys")
approvals_app = typer.Typer(no_args_is_help=True, help="Decide restricted transactions.")
app.add_typer(approvals_app, name="approvals")
audit_app = typer.Typer(no_args_is_help=True, help="The audit trail.")
app.add_typer(audit_app, name="audit")


console = Console()
err = Console(stderr=True)


class Kind(StrEnum):
    authorize = "authorize"
    execute = "execute"
    executor = "executor"
    approval = "approval"
    audit = "audit"


@app.command()
def worker(
    kind: Kind,
    target: Annotated[
        list[str] | None, typer.Option(help="Executor only: target(s) to serve (default: all).")
    ] = None,
) -> None:
    """Run one worker of the given kind until SIGINT/SIGTERM."""
    from mcp_handshake.services.runtime.logs import setup_logging
    from mcp_handshake.services.runtime.worker import run, serve

    settings = Settings.from_env()
    setup_logging(settings.log_level, settings.log_format)
    if kind is Kind.executor:
        from mcp_handshake.services.executor.main import builder

        run(serve(settings, kind.value, builder(list(target or []))))
        return
    module = importlib.import_module(f"mcp_handshake.services.{kind.value}.main")
    run(serve(settings, kind.value, module.build))


@app.command()
def up(
    authorize: Annotated[int, typer.Option(help="Authorize workers.")] = 1,
    execute: Annotated[int, typer.Option(help="Execute workers.")] = 1,
    executor: Annotated[int, typer.Option(help="Executor workers.")] = 1,
    approval: Annotated[int, typer.Option(help="Approval workers.")] = 1,
) -> None:
    """Start the whole stack locally (NATS, Redis, demo target, workers) until Ctrl-C."""
    from mcp_handshake.services.dev.cli._stack import run_up

    run_up(authorize, execute, executor, approval)


@app.command()
def demo() -> None:
    """Start the embedded stack, play a scripted agent, stop everything."""
    from mcp_handshake.services.dev.cli._demo import run_demo

    raise typer.Exit(run_demo())


@token_app.command("mint")
def token_mint(
    sub: Annotated[str, typer.Option(help="Subject (user id).")],
    role: Annotated[list[str] | None, typer.Option(help="Role (repeatable).")] = None,
    scope: Annotated[list[str] | None, typer.Option(help="OAuth scope (repeatable).")] = None,
    ttl: Annotated[int, typer.Option(help="Lifetime in seconds.")] = 3600,
    bind_key: Annotated[
        bool, typer.Option(help="Bind the session to the agent key (cnf.jkt).")
    ] = False,
) -> None:
    """Print a session JWT signed by the dev identity provider under HANDSHAKE_HOME."""
    from mcp_handshake.services.dev.devhome import mint_session
    from mcp_handshake.shared.proofs import ProofKey

    settings = Settings.from_env()
    if not (settings.home / "handshake.toml").exists():
        err.print(f"no dev home at {settings.home}: run 'mcp-handshake up' first")
        raise typer.Exit(2)
    jkt = ProofKey.load_or_create(settings.home / AGENT_KEY_FILE).thumbprint if bind_key else None
    print(mint_session(settings.home, sub, roles=role, scopes=scope, ttl_s=ttl, jkt=jkt))


@keys_app.command("register")
def keys_register(
    sub: Annotated[str, typer.Option(help="The subject the key belongs to.")],
    file: Annotated[Path, typer.Argument(help="Public key: PEM (or private PEM) or JWK JSON.")],
) -> None:
    """Register an agent's public key for proofs of possession (stored by the service)."""
    from mcp_handshake.services.dev.cli._keys import register

    print(asyncio.run(register(Settings.from_env(), sub, file)))


@keys_app.command("revoke")
def keys_revoke(
    sub: Annotated[str, typer.Option(help="The subject the key belongs to.")],
    kid: Annotated[str, typer.Argument(help="The key's thumbprint (as `register` printed).")],
) -> None:
    """Stop accepting proofs by a registered key, at once."""
    from mcp_handshake.services.dev.cli._keys import revoke

    if not asyncio.run(revoke(Settings.from_env(), sub, kid)):
        err.print("no such key for this subject")
        raise typer.Exit(1)


SessionOpt = Annotated[
    str | None,
    typer.Option("--session", envvar="HANDSHAKE_SESSION", help="Session JWT.", show_default=False),
]


async def _with_client(session: str | None, fn: Any) -> Any:
    from mcp_handshake.client import HandshakeClient

    if not session:
        raise HandshakeError("no session token: pass --session or set HANDSHAKE_SESSION")
    async with HandshakeClient.from_env(session=session) as hs:
        return await fn(hs)


def _run_client(session: str | None, fn: Any) -> Any:
    try:
        return asyncio.run(_with_client(session, fn))
    except HandshakeError as exc:
        code = getattr(exc, "code", "error")
        err.print(f"[red]{code}[/red]: {exc.message}")
        raise typer.Exit(1) from None


@app.command()
def tools(session: SessionOpt = None) -> None:
    """List the tools this session may use."""
    result = _run_client(session, lambda hs: hs.tools())
    for t in result:
        console.print(f"[bold]{t.name}[/bold] [dim]({t.tier})[/dim]  {t.description}")


@app.command()
def call(
    tool: str,
    params: Annotated[str, typer.Option(help="Params as a JSON object.")] = "{}",
    session: SessionOpt = None,
) -> None:
    """Authorize and execute one tool call, as an agent would; print result and receipt."""
    try:
        parsed = json.loads(params)
    except ValueError:
        err.print("--params must be a JSON object")
        raise typer.Exit(2) from None
    res = _run_client(session, lambda hs: hs.call(tool, parsed))
    print(json.dumps({"transaction_id": res.transaction_id, "result": res.result,
                      "receipt": res.claims}, indent=2))  # fmt: skip


@approvals_app.command("list")
def approvals_list(session: SessionOpt = None) -> None:
    """Transactions waiting for your decision."""
    from mcp_handshake.services.dev.cli._approvals import list_pending

    _run_client(session, list_pending)


@approvals_app.command("show")
def approvals_show(txn: str, session: SessionOpt = None) -> None:
    """One pending transaction: requester, tool, the params preview and its hash."""
    from mcp_handshake.services.dev.cli._approvals import show

    _run_client(session, lambda hs: show(hs, txn))


@approvals_app.command("approve")
def approvals_approve(
    txn: str,
    reason: Annotated[str | None, typer.Option(help="Why (recorded).")] = None,
    session: SessionOpt = None,
) -> None:
    """Approve a transaction (you may not approve your own)."""
    from mcp_handshake.services.dev.cli._approvals import decide

    _run_client(session, lambda hs: decide(hs, txn, "approve", reason))


@approvals_app.command("deny")
def approvals_deny(
    txn: str,
    reason: Annotated[str | None, typer.Option(help="Why (recorded).")] = None,
    session: SessionOpt = None,
) -> None:
    """Deny a transaction."""
    from mcp_handshake.services.dev.cli._approvals import decide

    _run_client(session, lambda hs: decide(hs, txn, "deny", reason))


@app.command()
def status(
    once: Annotated[bool, typer.Option(help="Print once instead of refreshing.")] = False,
    json_: Annotated[bool, typer.Option("--json", help="Print one JSON snapshot.")] = False,
) -> None:
    """Live view: workers up per kind, requests, errors, latency, audit lag, pending approvals."""
    from mcp_handshake.services.dev.cli._status import run_status

    try:
        asyncio.run(run_status(Settings.from_env(), once, json_))
    except KeyboardInterrupt:
        pass


@audit_app.command("verify")
def audit_verify(
    log: Annotated[
        Path | None, typer.Option(help="Log file (default: under HANDSHAKE_HOME).")
    ] = None,
) -> None:
    """Check the whole hash chain and every checkpoint signature; report the first bad line."""
    from mcp_handshake.services.dev.cli._audit import verify

    raise typer.Exit(verify(Settings.from_env(), log))


@audit_app.command("show")
def audit_show(txn: str) -> None:
    """The whole story of one transaction, from the audit log."""
    from mcp_handshake.services.dev.cli._audit import show

    raise typer.Exit(show(Settings.from_env(), txn))


@audit_app.command("export")
def audit_export(
    since: Annotated[
        str, typer.Option(help="ISO 8601 time, or seconds ago (e.g. 3600).")
    ] = "86400",
) -> None:
    """Events since a time, as JSON lines (for a SIEM)."""
    from mcp_handshake.services.dev.cli._audit import export

    raise typer.Exit(export(Settings.from_env(), since))


@audit_app.command("tail")
def audit_tail(
    all_: Annotated[bool, typer.Option("--all", help="Start from the oldest event.")] = False,
) -> None:
    """Follow the audit stream live, one readable line per event (Ctrl-C stops)."""
    from mcp_handshake.services.dev.cli._audit import tail

    asyncio.run(tail(Settings.from_env(), from_start=all_))


def main() -> None:
    app()
