"""A gateway worker: the HTTP server (uvicorn) on a NATS connection of its own.

It runs in the run loop every worker shares (connect, ``--health-port``, stop
on a signal), announces itself for discovery as ``handshake-gateway`` (with
its URL in the metadata), and serves HTTP as a background job. The listening
socket is bound while building, so a port in use fails start-up at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import replace
from typing import TYPE_CHECKING

import uvicorn
from nats.aio.client import Client as NATS
from starlette.types import ASGIApp

from mcp_handshake.services.core.dpop import GatewayKey, normalize_htu
from mcp_handshake.services.gateway.app import Gateway, GatewayOptions, create_app, http_routes
from mcp_handshake.services.gateway.hardening import protocol_factory
from mcp_handshake.services.runtime.build import VERSION
from mcp_handshake.services.runtime.service import MicroService
from mcp_handshake.services.runtime.streams import StartupError
from mcp_handshake.services.runtime.worker import Worker
from mcp_handshake.shared.settings import Settings

if TYPE_CHECKING:
    from mcp_handshake.services.gateway.mcp_app import McpEndpoint

__all__ = ["builder", "server_config"]

_EXIT_UNAVAILABLE = 8

log = logging.getLogger(__name__)


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        """The worker's run loop owns the signals (it stops the server)."""
        yield


def _listen(host: str, port: int) -> socket.socket:
    try:
        return socket.create_server((host, port), reuse_port=False)
    except OSError as exc:
        raise StartupError(
            f"unavailable: cannot listen on {host}:{port} ({exc.strerror})", _EXIT_UNAVAILABLE
        ) from None


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return host == "localhost"


def _check_public_url(opts: GatewayOptions) -> None:
    """A public URL that is one; none only on loopback (then the bound address is it)."""
    if opts.public_url and normalize_htu(opts.public_url) is None:
        raise StartupError(f"bad_request: --public-url {opts.public_url!r} is not an http(s) URL")
    if not opts.public_url and not _loopback(opts.host):
        raise StartupError(
            f"bad_request: a gateway listening on {opts.host} needs --public-url "
            "(HANDSHAKE_GATEWAY_PUBLIC_URL), the URL agents reach it at"
        )


def _public_url(opts: GatewayOptions, host: str, port: int) -> str:
    """The URL agents reach this gateway at: ``--public-url``, or for a loopback gateway
    its own address. Never the requests' Host or X-Forwarded-* headers."""
    if opts.public_url:
        return opts.public_url.rstrip("/")
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _gateway_key(opts: GatewayOptions, settings: Settings) -> GatewayKey:
    if opts.gateway_key is not None:
        return opts.gateway_key
    if settings.gateway_key_file is None:
        raise StartupError(
            "configuration: the gateway needs HANDSHAKE_GATEWAY_KEY_FILE, the key it shares "
            "with execute workers (deploy/keys.py init writes one)",
            2,
        )
    try:
        return GatewayKey.from_file(settings.gateway_key_file)
    except ValueError as exc:
        raise StartupError(f"configuration: {exc}", 2) from None


def builder(options: GatewayOptions) -> Callable[[Settings, NATS], Awaitable[Worker]]:
    """``build`` for the run loop, serving HTTP as ``options`` say (``StartupError`` at
    once for a public URL that is missing where it must be, or not a URL)."""
    _check_public_url(options)

    async def build(settings: Settings, nc: NATS) -> Worker:
        key = _gateway_key(options, settings)
        sock = _listen(options.host, options.port)
        host, port = sock.getsockname()[:2]
        url = _public_url(options, host, port)
        opts = replace(options, max_body=min(options.max_body, settings.max_payload),
                       public_url=url, gateway_key=key)  # fmt: skip
        routes = http_routes()
        gateway = Gateway(nc, settings.subjects, opts, routes)
        try:
            mcp = await _open_mcp(settings, gateway, url)
        except BaseException:
            sock.close()  # a start-up retried binds the port anew
            raise
        app = create_app(gateway, mcp.routes if mcp else ())
        server = _Server(server_config(app, opts))
        log.info("gateway serving HTTP on %s:%s (agents use %s)", host, port, url)

        async def serve_http() -> None:
            task = asyncio.ensure_future(server.serve(sockets=[sock]))
            try:
                await asyncio.shield(task)
            except asyncio.CancelledError:
                server.should_exit = True
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(task, 10)
                raise

        service = MicroService(
            "handshake-gateway",
            VERSION,
            "Protocol v1 over HTTP",
            list(routes.values()),
            metadata={"url": url},
        )
        background = [serve_http, *([mcp.run] if mcp else [])]
        return Worker(service, background=background, closers=[_closer(sock)])

    return build


async def _open_mcp(settings: Settings, gateway: Gateway, url: str) -> McpEndpoint | None:
    """``/mcp``, when the MCP SDK is installed (the ``mcp`` extra; the image has it)."""
    try:
        from mcp_handshake.services.gateway.mcp_app import open_mcp
    except ImportError:
        log.warning("no /mcp: the MCP SDK is not installed (pip install 'mcp-handshake[mcp]')")
        return None
    return await open_mcp(settings, gateway, url)


def server_config(app: ASGIApp, opts: GatewayOptions) -> uvicorn.Config:
    """uvicorn as the gateway runs it: no access log, no Server header, the header deadline
    and the connection cap of ``opts``."""
    return uvicorn.Config(
        app,
        log_config=None,
        access_log=False,
        lifespan="off",
        server_header=False,
        timeout_keep_alive=5,
        http=protocol_factory(opts.header_timeout_s),
        limit_concurrency=opts.max_connections,
    )


def _closer(sock: socket.socket) -> Callable[[], Awaitable[None]]:
    async def close() -> None:
        sock.close()

    return close
