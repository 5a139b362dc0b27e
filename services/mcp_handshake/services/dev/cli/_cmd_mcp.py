"""``mcp``: serve the session's mediated tools to an MCP host (stdio or streamable HTTP)."""

from __future__ import annotations

import logging
import sys
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from mcp_handshake.services.dev.cli._common import SessionOpt, fail, run_command, usage
from mcp_handshake.shared.settings import Settings

if TYPE_CHECKING:
    from mcp_handshake.client.mcp_server import ServeOptions


class Transport(StrEnum):
    stdio = "stdio"
    http = "http"


SecretFileOpt = Annotated[
    Path | None,
    typer.Option(
        help="HTTP only, required: a file (0600, yours) holding the bearer secret "
        "clients must send (at least 32 characters).",
        show_default=False,
    ),
]
AllowedHostOpt = Annotated[
    list[str] | None,
    typer.Option(
        help="HTTP only: a Host name clients use (repeatable); required on a non-loopback --host.",
        show_default=False,
    ),
]


def _check_http(options: ServeOptions) -> None:
    """No unprotected HTTP server: refused before anything starts."""
    from mcp_handshake.client.mcp_server import read_bearer_secret, transport_security

    try:
        if options.secret_file is None:
            raise ValueError("--transport http needs --secret-file (a bearer secret, 0600)")
        read_bearer_secret(options.secret_file)
        transport_security(options.host, options.allowed_hosts)
    except ValueError as exc:
        usage(str(exc))


def mcp(
    transport: Annotated[
        Transport, typer.Option(help="stdio (what MCP hosts start) or http (streamable HTTP).")
    ] = Transport.stdio,
    host: Annotated[str, typer.Option(help="HTTP only: address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="HTTP only: port.")] = 8765,
    secret_file: SecretFileOpt = None,
    allowed_host: AllowedHostOpt = None,
    session_command: Annotated[
        str | None,
        typer.Option(
            envvar="HANDSHAKE_SESSION_COMMAND",
            help="A command that prints a fresh session JWT; run again before each expiry.",
            show_default=False,
        ),
    ] = None,
    approval_wait: Annotated[
        float,
        typer.Option(min=0, help="Seconds a call waits for approval before answering 'pending'."),
    ] = 50.0,
    session: SessionOpt = None,
) -> None:
    """Serve the tools this session may use to an MCP host; each call is a full handshake.

    The session is $HANDSHAKE_SESSION (or --session), or what --session-command prints.
    Over HTTP every request must carry the bearer secret of --secret-file; remote hosts
    use the gateway's /mcp instead (docs/mcp.md).
    """
    from mcp_handshake.client import CommandSession, StaticSession

    if session_command:
        provider: CommandSession | StaticSession = CommandSession(session_command)
    elif session:
        provider = StaticSession(session)
    else:
        fail("unauthenticated", "no session: set HANDSHAKE_SESSION or pass --session-command")
    try:
        from mcp_handshake.client.mcp_server import ServeOptions, serve
    except ImportError as exc:
        usage(f"the MCP server needs the mcp extra: pip install 'mcp-handshake[mcp]' ({exc.name})")
    settings = Settings.from_env()
    # stdout belongs to the protocol: logs go to stderr, where hosts collect them.
    logging.basicConfig(stream=sys.stderr, level=settings.log_level,
                        format="mcp-handshake %(levelname)s %(message)s")  # fmt: skip
    # The SDK's own INFO lines (one per HTTP session) are noise in a host's log.
    logging.getLogger("mcp").setLevel(max(logging.WARNING, logging.getLogger().level))
    options = ServeOptions(transport.value, host, port, approval_wait, secret_file,
                           tuple(allowed_host or ()))  # fmt: skip
    if transport is Transport.http:
        _check_http(options)
    try:
        run_command(serve(settings, provider, options))
    except KeyboardInterrupt:
        pass
