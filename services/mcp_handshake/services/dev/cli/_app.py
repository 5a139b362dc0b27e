"""``mcp-handshake``: run workers and the dev stack, mint dev sessions, act as an agent."""

from __future__ import annotations

import importlib
import json
from enum import StrEnum
from pathlib import Path
from typing import Annotated, TypeVar

import typer

from mcp_handshake.services.dev.cli._cmd_approvals import approvals_app
from mcp_handshake.services.dev.cli._cmd_audit import audit_app
from mcp_handshake.services.dev.cli._cmd_bus import agents_app, nats_config
from mcp_handshake.services.dev.cli._cmd_catalog import catalog_app
from mcp_handshake.services.dev.cli._cmd_gateway import (
    CorsOpt,
    HostOpt,
    McpWaitOpt,
    NonceKeyOpt,
    PortOpt,
    PublicUrlOpt,
    gateway_build,
    gateway_port,
)
from mcp_handshake.services.dev.cli._cmd_identity import keys_app, token_app
from mcp_handshake.services.dev.cli._cmd_mcp import mcp
from mcp_handshake.services.dev.cli._cmd_policy import policy_app
from mcp_handshake.services.dev.cli._cmd_reconcile import reconcile
from mcp_handshake.services.dev.cli._common import (
    SessionOpt,
    console,
    run_client,
    run_command,
    usage,
)
from mcp_handshake.services.dev.cli._exits import help_epilog
from mcp_handshake.shared.settings import Settings

T = TypeVar("T")

app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__, epilog=help_epilog())
app.add_typer(token_app, name="token")
app.add_typer(keys_app, name="keys")
app.add_typer(approvals_app, name="approvals")
app.add_typer(audit_app, name="audit")
app.add_typer(agents_app, name="agents")
app.add_typer(policy_app, name="policy")
app.add_typer(catalog_app, name="catalog")
app.command("nats-config")(nats_config)
app.command("mcp")(mcp)
app.command("reconcile")(reconcile)


class Kind(StrEnum):
    authorize = "authorize"
    execute = "execute"
    executor = "executor"
    approval = "approval"
    audit = "audit"
    gateway = "gateway"
    console = "console"


@app.command()
def worker(
    kind: Kind,
    target: Annotated[
        list[str] | None, typer.Option(help="Executor only: target(s) to serve (default: all).")
    ] = None,
    health_port: Annotated[
        int | None,
        typer.Option(
            "--health-port",
            envvar="HANDSHAKE_HEALTH_PORT",
            help="Serve /healthz, /readyz and /metrics on this port.",
        ),
    ] = None,
    health_host: Annotated[
        str | None,
        typer.Option(
            "--health-host",
            envvar="HANDSHAKE_HEALTH_HOST",
            help="Address of the health port (default 127.0.0.1).",
        ),
    ] = None,
    host: HostOpt = "127.0.0.1",
    port: PortOpt = None,
    public_url: PublicUrlOpt = None,
    dpop_nonce_key_file: NonceKeyOpt = None,
    cors_origin: CorsOpt = None,
    mcp_approval_wait: McpWaitOpt = 50.0,
    dev_login: Annotated[
        bool, typer.Option("--dev-login", help="Console only: dev login (dev stack only).")
    ] = False,
) -> None:
    """Run one worker of the given kind until SIGINT/SIGTERM."""
    from mcp_handshake.services.runtime.logs import setup_logging
    from mcp_handshake.services.runtime.worker import run, serve

    settings = Settings.from_env()
    if health_port is not None:
        settings = settings.with_(health_port=health_port)
    if health_host is not None:
        settings = settings.with_(health_host=health_host)
    setup_logging(settings.log_level, settings.log_format)
    if kind is Kind.console:
        _console(settings, port, dev_login)
        return
    if kind is Kind.executor:
        from mcp_handshake.services.executor.main import builder

        run(serve(settings, kind.value, builder(list(target or []))))
        return
    if kind is Kind.gateway:
        build = gateway_build(host, gateway_port(port), public_url, dpop_nonce_key_file,
                              cors_origin, mcp_approval_wait)  # fmt: skip
        run(serve(settings, kind.value, build))
        return
    module = importlib.import_module(f"mcp_handshake.services.{kind.value}.main")
    run(serve(settings, kind.value, module.build))


def _console(settings: Settings, port: int | None, dev_login: bool) -> None:
    # Loaded by name, like the other worker kinds: the console sits above the CLI.
    module = importlib.import_module("mcp_handshake.services.console.main")
    try:
        module.main(settings, port=port, dev_login=dev_login)
    except ValueError as exc:
        usage(str(exc))


@app.command()
def up(
    authorize: Annotated[int, typer.Option(help="Authorize workers.")] = 1,
    execute: Annotated[int, typer.Option(help="Execute workers.")] = 1,
    executor: Annotated[int, typer.Option(help="Executor workers.")] = 1,
    approval: Annotated[int, typer.Option(help="Approval workers.")] = 1,
    catalog: Annotated[
        list[Path] | None, typer.Option(help="A tool catalog the workers load (repeatable).")
    ] = None,
) -> None:
    """Start the whole stack locally (NATS, Redis, demo target, workers) until Ctrl-C."""
    from mcp_handshake.services.dev.cli._stack import run_up

    run_up(authorize, execute, executor, approval, catalog or ())


@app.command()
def demo() -> None:
    """Start the embedded stack, play a scripted agent, stop everything."""
    from mcp_handshake.services.dev.cli._demo import run_demo

    raise typer.Exit(run_demo())


@app.command()
def tools(session: SessionOpt = None) -> None:
    """List the tools this session may use."""
    result = run_client(session, lambda hs: hs.tools())
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
        usage(
            f"--params is not valid JSON: {exc.msg} at line {exc.lineno}, "
            f"column {exc.colno} (char {exc.pos})"
        )
    if not isinstance(parsed, dict):
        usage(f"--params must be a JSON object, not {_JSON_TYPES[type(parsed)]}")
    res = run_client(session, lambda hs: hs.call(tool, parsed), approval_timeout_s=wait)
    print(json.dumps({"transaction_id": res.transaction_id, "result": res.result,
                      "receipt": res.claims}, indent=2))  # fmt: skip


@app.command()
def status(
    once: Annotated[bool, typer.Option(help="Print once instead of refreshing.")] = False,
    json_: Annotated[bool, typer.Option("--json", help="Print one JSON snapshot.")] = False,
) -> None:
    """Live view: workers up per kind, requests, errors, latency, audit lag, pending approvals."""
    from mcp_handshake.services.dev.cli._status import run_status

    try:
        run_command(run_status(Settings.from_env(), once, json_))
    except KeyboardInterrupt:
        pass


def main() -> None:
    app()
