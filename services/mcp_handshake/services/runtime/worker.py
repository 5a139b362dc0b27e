"""The run loop every worker kind shares: connect, serve, stop cleanly on a signal.

Starting is bounded: the first connection to NATS gets a few attempts, and a
failure (an untrusted certificate, refused credentials, no server) ends the
process with one line saying which (:class:`StartupError`); a JetStream that
is not ready yet is waited for, within ``startup_timeout_s`` (startup.py).
Once connected, reconnects are unlimited. A signal during start-up stops the
worker at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from nats.aio.client import Client as NATS

from mcp_handshake.services.runtime.connect import connect_nats
from mcp_handshake.services.runtime.health import Health
from mcp_handshake.services.runtime.service import MicroService
from mcp_handshake.services.runtime.startup import retry_transient
from mcp_handshake.services.runtime.streams import StartupError
from mcp_handshake.services.runtime.telemetry import setup_telemetry
from mcp_handshake.services.store.redis_check import check_redis
from mcp_handshake.shared.errors import HandshakeError, Unauthenticated
from mcp_handshake.shared.settings import Settings

__all__ = ["StartupError", "Worker", "connect_nats", "run", "serve"]

#: Exit codes of ``mcp-handshake`` (dev/cli/_exits.py): auth, unavailable.
_EXIT_AUTH, _EXIT_UNAVAILABLE = 3, 8

log = logging.getLogger(__name__)


@dataclass
class Worker:
    """What a worker kind builds at start-up: its service and what to close after."""

    service: MicroService
    closers: list[Callable[[], Awaitable[Any]]] = field(default_factory=list)
    background: list[Callable[[], Coroutine[Any, Any, Any]]] = field(default_factory=list)
    #: What ``/readyz`` checks besides NATS: the store's Redis client (anything with an
    #: async ``ping``), the audit emitter (its outbox must not be full).
    redis: Any = None
    audit: Any = None
    #: Gauges exported on ``/metrics`` (``Metrics.gauges``).
    gauges: dict[str, float] = field(default_factory=dict)


async def _or_stop(stop: asyncio.Event, work: Awaitable[Any]) -> Any:
    """``work``'s result, or ``None`` (``work`` cancelled) if ``stop`` is set first."""
    task = asyncio.ensure_future(work)
    stopped = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({task, stopped}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopped.cancel()
    if task.done():
        return task.result()
    task.cancel()
    with contextlib.suppress(BaseException):
        await task
    return None


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
    health = Health(kind) if settings.health_port is not None else None
    try:
        if health is not None and settings.health_port is not None:
            await health.start(settings.health_host, settings.health_port)
        await _start_and_serve(settings, kind, build, stop, health)
    finally:
        if health is not None:
            await health.stop()
        shutdown_telemetry()


async def _start_and_serve(
    settings: Settings,
    kind: str,
    build: Callable[[Settings, NATS], Awaitable[Worker]],
    stop: asyncio.Event,
    health: Health | None,
) -> None:
    async def attempt() -> tuple[NATS, Worker | None] | None:
        nc: NATS | None = await _or_stop(stop, connect_nats(settings, f"handshake-{kind}"))
        if nc is None:
            return None
        try:
            return nc, await _or_stop(stop, build(settings, nc))
        except BaseException:
            with contextlib.suppress(Exception):
                await nc.close()
            raise

    started = await retry_transient(settings, kind, attempt)
    if started is None:
        return
    nc, worker = started
    if health is not None:
        health.nc = nc
    if worker is None or not await _store_usable(settings, worker, nc, stop):
        with contextlib.suppress(Exception):
            await nc.close()
        return
    # Which event loop serves (uvloop under ``run``), for discovery (INFO) and the log.
    loop_kind = type(asyncio.get_running_loop()).__module__.split(".")[0]
    worker.service.metadata.setdefault("event_loop", loop_kind)
    await worker.service.start(nc)
    if health is not None:
        health.ready(worker)
    tasks = [asyncio.create_task(job()) for job in worker.background]
    for task in tasks:
        task.add_done_callback(_report_crash(stop))
    log.info("%s worker ready (id %s, %s loop)", kind, worker.service.id, loop_kind,
             extra={"worker": kind})  # fmt: skip
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


async def _store_usable(settings: Settings, worker: Worker, nc: NATS, stop: asyncio.Event) -> bool:
    """First contact with Redis (kinds that use it): refused credentials or a failed TLS
    handshake end the worker with one line, like NATS's; ``False`` if stopped meanwhile."""
    if worker.redis is None:
        return True
    try:
        await _or_stop(stop, check_redis(worker.redis, settings))
    except HandshakeError as exc:
        for close in worker.closers:
            with contextlib.suppress(Exception):
                await close()
        # NATS is left to the process's exit: closing it here would log a disconnect
        # before the one line this ends with.
        code = _EXIT_AUTH if isinstance(exc, Unauthenticated) else _EXIT_UNAVAILABLE
        raise StartupError(f"{exc.code}: {exc.message}", code) from None
    return not stop.is_set()


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
    """Run a coroutine on uvloop where available; a :class:`StartupError` or an
    ``OSError`` ends the process with one line on stderr and its exit code."""
    try:
        try:
            import uvloop
        except ImportError:
            asyncio.run(main)  # type: ignore[arg-type]
        else:
            uvloop.run(main)  # type: ignore[arg-type]
    except StartupError as exc:
        sys.stderr.write(f"{exc.args[0]}\n")
        sys.stderr.flush()
        raise SystemExit(exc.exit_code) from None
    except OSError as exc:
        # A file it cannot read (a kind without its mount) or write (a read-only mount):
        # one line, exit 2 (the CLI's "usage" class, dev/cli/_exits.py).
        if isinstance(exc, FileNotFoundError | PermissionError | IsADirectoryError):
            line = f"configuration: cannot read {exc.filename}: {exc.strerror}"
        else:
            line = f"failed: {exc.filename or 'start-up'}: {exc.strerror or exc}"
        sys.stderr.write(line + "\n")
        raise SystemExit(2) from None  # SystemExit flushes stderr on the way out
