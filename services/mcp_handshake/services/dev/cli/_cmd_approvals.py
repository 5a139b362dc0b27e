"""``approvals``: decide restricted transactions."""

from __future__ import annotations

from typing import Annotated, TypeVar

import typer

from mcp_handshake.services.dev.cli._common import SessionOpt, run_client

T = TypeVar("T")

approvals_app = typer.Typer(no_args_is_help=True, help="Decide restricted transactions.")


@approvals_app.command("list")
def approvals_list(session: SessionOpt = None) -> None:
    """Transactions waiting for your decision."""
    from mcp_handshake.services.dev.cli._approvals import list_pending

    run_client(session, list_pending)


@approvals_app.command("show")
def approvals_show(txn: str, session: SessionOpt = None) -> None:
    """One pending transaction: requester, tool, the params preview and its hash."""
    from mcp_handshake.services.dev.cli._approvals import show

    run_client(session, lambda hs: show(hs, txn))


@approvals_app.command("approve")
def approvals_approve(
    txn: str,
    reason: Annotated[str | None, typer.Option(help="Why (recorded).")] = None,
    session: SessionOpt = None,
) -> None:
    """Approve a transaction (you may not approve your own)."""
    from mcp_handshake.services.dev.cli._approvals import decide

    run_client(session, lambda hs: decide(hs, txn, "approve", reason))


@approvals_app.command("deny")
def approvals_deny(
    txn: str,
    reason: Annotated[str | None, typer.Option(help="Why (recorded).")] = None,
    session: SessionOpt = None,
) -> None:
    """Deny a transaction."""
    from mcp_handshake.services.dev.cli._approvals import decide

    run_client(session, lambda hs: decide(hs, txn, "deny", reason))
