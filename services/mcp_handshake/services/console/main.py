"""``mcp-handshake worker console``: the web console until SIGINT/SIGTERM."""

from __future__ import annotations

import asyncio
import logging

import uvicorn

from mcp_handshake.services.console.app import create_app
from mcp_handshake.services.console.backend import Backend
from mcp_handshake.services.console.settings import ConsoleSettings
from mcp_handshake.services.core.config import load_config
from mcp_handshake.services.core.policy import load_policy
from mcp_handshake.services.runtime.worker import connect_nats
from mcp_handshake.shared.settings import Settings

__all__ = ["main", "run_console", "serve_console"]

log = logging.getLogger(__name__)


async def serve_console(settings: Settings, cs: ConsoleSettings) -> None:
    cs.check()
    cfg = load_config(settings.config_path)
    policy = load_policy(cfg.policy_file)
    nc = await connect_nats(settings, "handshake-console")
    try:
        app = create_app(cs, Backend(settings, cfg, policy, nc, cs.approver_keys))
        config = uvicorn.Config(app, host=cs.host, port=cs.port, log_level="warning",
                                access_log=False, server_header=False, lifespan="off")  # fmt: skip
        log.info("console listening on %s", cs.base_url)
        await uvicorn.Server(config).serve()
    finally:
        await nc.drain()


def run_console(settings: Settings, cs: ConsoleSettings) -> None:
    asyncio.run(serve_console(settings, cs))


def main(settings: Settings, *, port: int | None = None, dev_login: bool = False) -> None:
    """``worker console``: ``HANDSHAKE_CONSOLE_*`` settings, with the command line's port
    and dev login over them; ``ValueError`` for settings it refuses."""
    cs = ConsoleSettings.from_env()
    run_console(settings, cs.with_(port=port or cs.port, dev_login=dev_login or cs.dev_login))
