"""``mcp-handshake``: run workers and the dev stack, mint dev sessions, act as an agent."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Coroutine
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import typer
from rich.console import Console
from rich.text import Text

from mcp_handshake.services.dev.cli._exits import USAGE, exit_code, help_epilog
from mcp_handshake.services.dev.devhome import MAX_SESSION_TTL_S
from mcp_handshake.shared.errors import HandshakeError, Unauthenticated
from mcp_handshake.shared.settings import Settings

T = TypeVar("T")

app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__, epilog=help_epilog())
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


def _fail(code: str, message: str, exit_with: int | None = None) -> NoReturn:
    """One line on stderr, ``<code>: <message>``, then the code's exit status."""
    line = Text(code, style="red")
    line.append(f": {message}")
    err.print(line, soft_wrap=True, highlight=False)
    raise typer.Exit(exit_code(code) if exit_with is None else exit_with)


def _usage(message: str) -> NoReturn:
    _fail("usage", message, USAGE)


def _run(coro: Coroutine[Any, Any, T]) -> T:
    """Run a command's coroutine; a protocol error becomes one line and its exit code."""
    try:
        return asyncio.run(coro)
    except HandshakeError as exc:
        txn = f" (transaction {exc.transaction_id})" if exc.transaction_id else ""
        _fail(exc.code, exc.message + txn)


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
    if kind is Kind.authorize:
        from mcp_handshake.services.authorize.main import build
    elif kind is Kind.execute:
        from mcp_handshake.services.execute.main import build
    elif kind is Kind.approval:
        from mcp_handshake.services.approval.main import build
    elif kind is Kind.audit:
        from mcp_handshake.services.audit.main import build
    else:
        from mcp_handshake.services.executor.main import builder

        build = builder(list(target or []))
    run(serve(settings, kind.value, build))


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
    ttl: Annotated[
        int, typer.Option(help=f"Lifetime in seconds, at most {MAX_SESSION_TTL_S} (24 h).")
    ] = 3600,
    bind_key: Annotated[
        bool,
        typer.Option(
            help="Bind the session (cnf.jkt) to this user's agent key "
            "($HANDSHAKE_AGENT_KEY, default ~/.config/mcp-handshake/agent.pem)."
        ),
    ] = False,
    public_key: Annotated[
        Path | None,
        typer.Option(
            help="Bind the session (cnf.jkt) to this public key (PEM or JWK JSON), "
            "e.g. an agent's in another language.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Print a session JWT signed by the dev identity provider under HANDSHAKE_HOME."""
    from mcp_handshake.services.dev.cli._keys import KeyFileError, agent_key, read_public_jwk
    from mcp_handshake.services.dev.devhome import mint_session

    if not 1 <= ttl <= MAX_SESSION_TTL_S:
        _usage(f"--ttl must be between 1 and {MAX_SESSION_TTL_S} seconds (24 h), not {ttl}")
    if bind_key and public_key is not None:
        _usage("--bind-key and --public-key are alternatives: give one")
    settings = Settings.from_env()
    if not (settings.home / "handshake.toml").exists():
        _usage(f"no dev home at {settings.home}: run 'mcp-handshake up' or set HANDSHAKE_HOME")
    jkt = None
    if public_key is not None:
        try:
            jkt = str(read_public_jwk(public_key)["kid"])
        except KeyFileError as exc:
            _usage(str(exc))
    elif bind_key:
        jkt = agent_key(settings).thumbprint
    print(mint_session(settings.home, sub, roles=role, scopes=scope, ttl_s=ttl, jkt=jkt))


@keys_app.command("register")
def keys_register(
    sub: Annotated[str, typer.Option(help="The subject the key belongs to.")],
    file: Annotated[
        Path | None,
        typer.Argument(
            help="Public key: PEM (or private PEM) or JWK JSON "
            "(default: this user's agent key, created if missing).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Register an agent's public key for proofs of possession (stored by the service in
    the Redis of HANDSHAKE_HOME's stack); prints its thumbprint."""
    from mcp_handshake.services.dev.cli._keys import (
        KeyFileError,
        agent_key,
        read_public_jwk,
        register,
    )

    settings = Settings.from_env()
    try:
        jwk = read_public_jwk(file) if file else dict(agent_key(settings).public_jwk)
    except KeyFileError as exc:
        _usage(str(exc))
    print(_run(register(settings, sub, jwk)))


@keys_app.command("revoke")
def keys_revoke(
    sub: Annotated[str, typer.Option(help="The subject the key belongs to.")],
    kid: Annotated[str, typer.Argument(help="The key's thumbprint (as `register` printed).")],
) -> None:
    """Stop accepting proofs by a registered key, at once."""
    from mcp_handshake.services.dev.cli._keys import revoke

    if not _run(revoke(Settings.from_env(), sub, kid)):
        _fail("failed", "no such key for this subject", 1)


SessionOpt = Annotated[
    str | None,
    typer.Option("--session", envvar="HANDSHAKE_SESSION", help="Session JWT.", show_default=False),
]


async def _with_client(
    session: str | None, fn: Callable[[Any], Awaitable[T]], options: dict[str, Any]
) -> T:
    from mcp_handshake.client import HandshakeClient
    from mcp_handshake.services.dev.cli._conn import nats_connection

    if not session:
        raise Unauthenticated("no session: pass --session or set HANDSHAKE_SESSION")
    async with (
        nats_connection(Settings.from_env()) as nc,
        HandshakeClient.from_env(session=session, nc=nc, **options) as hs,
    ):
        return await fn(hs)


def _run_client(session: str | None, fn: Callable[[Any], Awaitable[T]], **options: Any) -> T:
    """Run ``fn(client)`` on a ``HandshakeClient.from_env(**options)`` for this session."""
    return _run(_with_client(session, fn, options))


@app.command()
def tools(session: SessionOpt = None) -> None:
    """List the tools this session may use."""
    result = _run_client(session, lambda hs: hs.tools())
    for t in result:
        console.print(f"[bold]{t.name}[/bold] [dim]({t.tier})[/dim]  {t.description}")


_JSON_TYPES = {list: "an array", str: "a string", int: "a number", float: "a number",
               bool: "a boolean", type(None): "null"}  # fmt: skip


@app.command()
def call(
    tool: str,
    params: Annotated[str, typer.Option(help="Params as a JSON object.")] = "{}",
    wait: Annotated[
        float, typer.Option(min=0.1, help="Restricted tools: seconds to wait for approval.")
    ] = 600.0,
    session: SessionOpt = None,
) -> None:
    """Authorize and execute one tool call, as an agent would; print result and receipt."""
    try:
        parsed = json.loads(params)
    except json.JSONDecodeError as exc:
        _usage(
            f"--params is not valid JSON: {exc.msg} at line {exc.lineno}, "
            f"column {exc.colno} (char {exc.pos})"
        )
    if not isinstance(parsed, dict):
        _usage(f"--params must be a JSON object, not {_JSON_TYPES[type(parsed)]}")
    res = _run_client(session, lambda hs: hs.call(tool, parsed), approval_timeout_s=wait)
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
        _run(run_status(Settings.from_env(), once, json_))
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

    try:
        _run(tail(Settings.from_env(), from_start=all_))
    except KeyboardInterrupt:
        pass


def main() -> None:
    app()
