"""The run loop every worker kind shares: connect, serve, stop cleanly on a signal."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import nats
from nats.aio.client import Client as NATS

from mcp_handshake.services.runtime.service import MicroService
from mcp_handshake.services.runtime.telemetry import setup_telemetry
from mcp_handshake.shared.natsconn import connect_options
from mcp_handshake.shared.settings import Settings

__all__ = ["Worker", "connect_nats", "run", "serve"]

log = logging.getLogger(__name__)


@dataclass
class Worker:
    """What a worker kind builds at start-up: its service and what to close after."""

    service: MicroService
    closers: list[Callable[[], Awaitable[Any]]] = field(default_factory=list)
    background: list[Callable[[], Coroutine[Any, Any, Any]]] = field(default_factory=list)


async def connect_nats(settings: Settings, name: str) -> NATS:
    async def on_error(exc: Exception) -> None:
        log.warning("NATS error: %s", type(exc).__name__)

    async def on_disconnect() -> None:
        log.warning("NATS disconnected; reconnecting")

    async def on_reconnect() -> None:
        log.info("NATS reconnected")

    return await nats.connect(
        **connect_options(settings, name),
        max_reconnect_attempts=-1,
        reconnect_time_wait=0.5,
        connect_timeout=5,
        error_cb=on_error,
        disconnected_cb=on_disconnect,
        reconnected_cb=on_reconnect,
    )


async def serve(
    settings: Settings,
    kind: str,
    build: Callable[[Settings, NATS], Awaitable[Worker]],
    stop: asyncio.Event | None = None,
    *,
    install_signals: bool = True,
) -> None:
    """Run one worker until SIGINT/SIGTERM (or ``stop`` is set), then stop cleanly."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    if install_signals:
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, stop.set)
        shutdown_telemetry = setup_telemetry(settings, kind)
    else:  # embedded (tests): the host process owns signals and telemetry
        shutdown_telemetry = lambda: None  # noqa: E731
    nc = await connect_nats(settings, f"handshake-{kind}")
    worker = await build(settings, nc)
    await worker.service.start(nc)
    tasks = [asyncio.create_task(job()) for job in worker.background]
    for task in tasks:
        task.add_done_callback(_report_crash(stop))
    log.info("%s worker ready (id %s)", kind, worker.service.id, extra={"worker": kind})
    try:
        await stop.wait()
    finally:
        log.info("%s worker stopping", kind, extra={"worker": kind})
        await worker.service.stop()
        log.debug("endpoints stopped")
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        log.debug("background jobs stopped")
        for close in worker.closers:
            with contextlib.suppress(Exception):
                await close()
            log.debug("closed %s", close)
        # Endpoints already finished their requests; flush the last replies and
        # close. (A drain would also wait on JetStream pull subscriptions whose
        # late status messages nobody reads, for its whole timeout.)
        with contextlib.suppress(Exception):
            await nc.flush(timeout=2)
        with contextlib.suppress(Exception):
            await nc.close()
        shutdown_telemetry()


def _report_crash(stop: asyncio.Event) -> Callable[[asyncio.Task[Any]], None]:
    """A background job that dies takes the worker down loudly (its supervisor restarts it),
    instead of leaving a process that looks alive and does nothing."""

    def done(task: asyncio.Task[Any]) -> None:
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            log.error("background job failed; stopping", exc_info=exc)
            stop.set()

    return done


def run(main: Awaitable[None]) -> None:
    """Run a coroutine on uvloop where available."""
    try:
        import uvloop

        uvloop.run(main)  # type: ignore[arg-type]
    except ImportError:
        asyncio.run(main)  # type: ignore[arg-type]
