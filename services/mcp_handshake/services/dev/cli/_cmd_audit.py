"""``audit``: verify, show, export and tail the audit trail."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, TypeVar

import typer

from mcp_handshake.services.dev.cli._common import run_command
from mcp_handshake.shared.settings import Settings

T = TypeVar("T")

audit_app = typer.Typer(no_args_is_help=True, help="The audit trail.")


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
        run_command(tail(Settings.from_env(), from_start=all_))
    except KeyboardInterrupt:
        pass
