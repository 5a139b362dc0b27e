"""``worker gateway`` options, and the gateway's ``build`` from them."""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from mcp_handshake.services.dev.cli._common import usage

if TYPE_CHECKING:  # the CLI starts fast: worker modules load only when a worker runs
    from nats.aio.client import Client as NATS

    from mcp_handshake.services.runtime.worker import Worker
    from mcp_handshake.shared.settings import Settings

__all__ = [
    "CorsOpt",
    "HostOpt",
    "McpWaitOpt",
    "NonceKeyOpt",
    "PortOpt",
    "PublicUrlOpt",
    "gateway_build",
    "gateway_port",
]

HostOpt = Annotated[str, typer.Option(envvar="HANDSHAKE_GATEWAY_HOST",
                                      help="Gateway only: address to listen on.")]  # fmt: skip
PortOpt = Annotated[
    int | None,
    typer.Option(
        help="Gateway or console: HTTP port (default: HANDSHAKE_GATEWAY_PORT or 8080 for the"
        " gateway, HANDSHAKE_CONSOLE_PORT or 8090 for the console)."
    ),
]
PublicUrlOpt = Annotated[
    str | None,
    typer.Option(
        envvar="HANDSHAKE_GATEWAY_PUBLIC_URL",
        help="Gateway only: the URL agents reach it at (DPoP proofs name it); required"
        " unless it listens on loopback.",
    ),
]
NonceKeyOpt = Annotated[
    Path | None,
    typer.Option(
        envvar="HANDSHAKE_GATEWAY_DPOP_NONCE_KEY_FILE",
        help="Gateway only: require DPoP server nonces, made with this key (>= 32 bytes).",
    ),
]
CorsOpt = Annotated[
    list[str] | None,
    typer.Option(help="Gateway only: an origin CORS allows (repeatable; none by default)."),
]
McpWaitOpt = Annotated[
    float,
    typer.Option(
        "--mcp-approval-wait",
        envvar="HANDSHAKE_GATEWAY_MCP_APPROVAL_WAIT_S",
        min=0,
        help="Gateway only: seconds a restricted call at /mcp waits for approval before it"
        " answers 'pending approval' (then handshake_wait follows it up).",
    ),
]


def gateway_port(port: int | None) -> int:
    """The gateway's port: ``--port``, else ``HANDSHAKE_GATEWAY_PORT``, else 8080."""
    if port is not None:
        return port
    raw = os.environ.get("HANDSHAKE_GATEWAY_PORT", "8080")
    try:
        return int(raw)
    except ValueError:
        usage(f"HANDSHAKE_GATEWAY_PORT: not a port number: {raw!r}")


def gateway_build(
    host: str,
    port: int,
    public_url: str | None,
    nonce_key: Path | None,
    cors: list[str] | None,
    mcp_wait_s: float = 50.0,
) -> Callable[[Settings, NATS], Awaitable[Worker]]:
    from mcp_handshake.services.gateway.app import GatewayOptions
    from mcp_handshake.services.gateway.main import builder
    from mcp_handshake.services.gateway.nonce import NonceIssuer
    from mcp_handshake.services.runtime.streams import StartupError

    nonces = None
    if nonce_key is not None:
        try:
            nonces = NonceIssuer.from_file(nonce_key)
        except (OSError, ValueError) as exc:
            usage(f"--dpop-nonce-key-file: {exc}")
    options = GatewayOptions(host=host, port=port, public_url=public_url, nonces=nonces,
                             cors_origins=tuple(cors or ()),
                             mcp_approval_wait_s=mcp_wait_s)  # fmt: skip
    try:
        return builder(options)
    except StartupError as exc:
        usage(str(exc).removeprefix("bad_request: "))
