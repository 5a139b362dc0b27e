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
    against_stream: Annotated[
        bool,
        typer.Option(
            "--against-stream",
            help="Also check that every checkpoint in HANDSHAKE_CHECKPOINTS is in the log.",
        ),
    ] = False,
) -> None:
    """Check the hash chain, every signature, stream continuity and the checkpoint copies.

    Every gap is reported: unaccepted ones (and missing, trimmed or inconsistent
    checkpoint data) fail; gaps an operator accepted are listed as accepted.
    """
    from mcp_handshake.services.dev.cli._audit import verify

    raise typer.Exit(verify(Settings.from_env(), log, against_stream))


@audit_app.command("resume")
def audit_resume(
    accept_gap: Annotated[
        bool,
        typer.Option("--accept-gap", help="Accept the gap the halted writer found (required)."),
    ] = False,
    by: Annotated[
        str | None, typer.Option(help="Who accepts it (default: your login name).")
    ] = None,
    note: Annotated[str, typer.Option(help="Why the gap is accepted.")] = "",
) -> None:
    """Let a halted audit writer go on: the gap is recorded in the log as accepted (signed)."""
    import getpass

    from mcp_handshake.services.dev.cli._audit import resume

    if not accept_gap:
        typer.echo("resuming records the gap as accepted: pass --accept-gap", err=True)
        raise typer.Exit(2)
    who = by or getpass.getuser()
    raise typer.Exit(run_command(resume(Settings.from_env(), who, note)))


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
