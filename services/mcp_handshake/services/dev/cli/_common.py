"""What every CLI command shares: output, errors and exit codes, the session option, the client."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from typing import Annotated, Any, NoReturn, TypeVar

import typer
from rich.console import Console
from rich.text import Text

from mcp_handshake.services.dev.cli._exits import USAGE, exit_code
from mcp_handshake.shared.errors import HandshakeError, Unauthenticated
from mcp_handshake.shared.settings import Settings

T = TypeVar("T")

console = Console()
err = Console(stderr=True)


def fail(code: str, message: str, exit_with: int | None = None) -> NoReturn:
    """One line on stderr, ``<code>: <message>``, then the code's exit status."""
    line = Text(code, style="red")
    line.append(f": {message}")
    err.print(line, soft_wrap=True, highlight=False)
    raise typer.Exit(exit_code(code) if exit_with is None else exit_with)


def usage(message: str) -> NoReturn:
    fail("usage", message, USAGE)


def run_command(coro: Coroutine[Any, Any, T]) -> T:
    """Run a command's coroutine (on uvloop where installed, like the workers, for the
    long-running ones: ``mcp``); a protocol error becomes one line and its exit code."""
    try:
        try:
            import uvloop
        except ImportError:
            return asyncio.run(coro)
        return uvloop.run(coro)
    except HandshakeError as exc:
        txn = f" (transaction {exc.transaction_id})" if exc.transaction_id else ""
        fail(exc.code, exc.message + txn)


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


def run_client(session: str | None, fn: Callable[[Any], Awaitable[T]], **options: Any) -> T:
    """Run ``fn(client)`` on a ``HandshakeClient.from_env(**options)`` for this session."""
    return run_command(_with_client(session, fn, options))
