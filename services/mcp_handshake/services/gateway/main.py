"""A gateway worker: the HTTP server (uvicorn) on a NATS connection of its own.

It runs in the run loop every worker shares (connect, ``--health-port``, stop
on a signal), announces itself for discovery as ``handshake-gateway`` (with
its URL in the metadata), and serves HTTP as a background job. The listening
socket is bound while building, so a port in use fails start-up at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import replace
from typing import TYPE_CHECKING

import uvicorn
from nats.aio.client import Client as NATS

from mcp_handshake.services.gateway.app import Gateway, GatewayOptions, create_app, http_routes
from mcp_handshake.services.runtime.build import VERSION
from mcp_handshake.services.runtime.service import MicroService
from mcp_handshake.services.runtime.streams import StartupError
from mcp_handshake.services.runtime.worker import Worker
from mcp_handshake.shared.settings import Settings

if TYPE_CHECKING:
    from mcp_handshake.services.gateway.mcp_app import McpEndpoint

__all__ = ["builder"]

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


def builder(options: GatewayOptions) -> Callable[[Settings, NATS], Awaitable[Worker]]:
    """``build`` for the run loop, serving HTTP as ``options`` say."""

    async def build(settings: Settings, nc: NATS) -> Worker:
        opts = replace(options, max_body=min(options.max_body, settings.max_payload))
        routes = http_routes()
        gateway = Gateway(nc, settings.subjects, opts, routes)
        sock = _listen(opts.host, opts.port)
        host, port = sock.getsockname()[:2]
        url = opts.public_url or f"http://{host}:{port}"
        mcp = await _open_mcp(settings, gateway, url)
        app = create_app(gateway, mcp.routes if mcp else ())
        config = uvicorn.Config(
            app,
            log_config=None,
            access_log=False,
            lifespan="off",
            server_header=False,
            timeout_keep_alive=5,
        )
        server = _Server(config)
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


def _closer(sock: socket.socket) -> Callable[[], Awaitable[None]]:
    async def close() -> None:
        sock.close()

    return close
