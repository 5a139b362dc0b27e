"""``mcp-handshake worker console``: the web console until SIGINT/SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any, cast

import uvicorn

from mcp_handshake.services.catalog.registry import open_tools
from mcp_handshake.services.console.app import create_app
from mcp_handshake.services.console.backend import Backend
from mcp_handshake.services.console.settings import ConsoleSettings
from mcp_handshake.services.core.config import load_config
from mcp_handshake.services.policy import load_policy
from mcp_handshake.services.runtime.health import Health
from mcp_handshake.services.runtime.streams import StartupError
from mcp_handshake.services.runtime.worker import Worker, connect_nats, run
from mcp_handshake.shared.settings import Settings

__all__ = ["main", "run_console", "serve_console"]

log = logging.getLogger(__name__)


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling (it re-raises SIGTERM after shutting
    down, which would skip the console's clean-up): the loop's handlers stop it."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def _listen(host: str, port: int) -> socket.socket:
    """The console's listening socket, or one line saying why not (a port taken)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        return socket.create_server((host.strip("[]"), port), family=family)
    except OSError as exc:
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        raise StartupError(f"failed: console port {host}:{port}: {reason}") from None


async def serve_console(settings: Settings, cs: ConsoleSettings) -> None:
    cs.check()
    cfg, tools = open_tools(load_config(settings.config_path))
    policy = load_policy(cfg.policy_file, tools, cfg.policy_defaults)
    # The audit public key set, read once now: a console without it could verify no log.
    cfg.resolve(cfg.keys.audit_public).read_bytes()
    health = Health("console") if settings.health_port is not None else None
    if health is not None and settings.health_port is not None:
        await health.start(settings.health_host, settings.health_port)
    sock = _listen(cs.host, cs.port)
    nc = await connect_nats(settings, "handshake-console")
    # The policy in force, as the workers have it: reloaded on SIGHUP and on a file change
    # (approver roles come from it); a set that fails keeps the old one, with the alarm.
    watcher = asyncio.ensure_future(policy.watch())
    try:
        app = create_app(cs, Backend(settings, cfg, policy, nc, cs.approver_keys))
        config = uvicorn.Config(app, log_level="warning", access_log=False,
                                server_header=False, lifespan="off")  # fmt: skip
        server = _Server(config)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, lambda: setattr(server, "should_exit", True))
        serving = asyncio.ensure_future(server.serve(sockets=[sock]))
        # uvicorn sets a flag, not an event, once it serves
        while not server.started and not serving.done():  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        if health is not None and server.started:
            health.nc = nc
            # A worker with no NATS endpoints, no audit emitter and no Redis client: the
            # health port finds it ready while NATS is connected.
            health.ready(Worker(service=cast(Any, SimpleNamespace(endpoints=[]))))
        log.info("console listening on %s", cs.base_url)
        await serving
    finally:
        watcher.cancel()
        sock.close()
        await nc.drain()
        if health is not None:
            await health.stop()


def run_console(settings: Settings, cs: ConsoleSettings) -> None:
    """Until SIGINT/SIGTERM; a start-up failure (NATS, the health port, an unreadable
    file) ends the process with one line, as for the workers."""
    run(serve_console(settings, cs))


def main(settings: Settings, *, port: int | None = None, dev_login: bool = False) -> None:
    """``worker console``: ``HANDSHAKE_CONSOLE_*`` settings, with the command line's port
    and dev login over them; ``ValueError`` for settings it refuses."""
    cs = ConsoleSettings.from_env()
    run_console(settings, cs.with_(port=port or cs.port, dev_login=dev_login or cs.dev_login))
