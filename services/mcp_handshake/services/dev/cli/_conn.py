"""The CLI's NATS connections: one-shot, fail fast and quietly, errors as ``Unavailable``.

A command is not a worker: when NATS is not there it must say so in
one line within seconds, not retry for minutes with a traceback per attempt.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

from nats.aio.client import Client as NATS
from nats.errors import ConnectionClosedError, StaleConnectionError

from mcp_handshake.shared.errors import Unavailable
from mcp_handshake.shared.natsconn import connect_bounded, redact
from mcp_handshake.shared.settings import Settings

__all__ = ["CONNECT_DEADLINE_S", "nats_connection"]

#: The longest a command waits for NATS before it reports ``unavailable``.
CONNECT_DEADLINE_S = 2.0


async def _ignore_error(_: Exception) -> None:
    """nats-py's default error callback logs a traceback for every failed attempt."""


async def _ignore() -> None:
    pass


async def _connect(settings: Settings, closed_cb: Callable[[], Awaitable[None]]) -> NATS:
    return await connect_bounded(
        settings,
        "mcp-handshake-cli",
        CONNECT_DEADLINE_S,
        connect_timeout=2,
        # nats-py treats max_reconnect_attempts=0 as "no limit" while picking a
        # server; 1 tries each server at most twice, back to back.
        allow_reconnect=False,
        max_reconnect_attempts=1,
        reconnect_time_wait=0,
        error_cb=_ignore_error,
        disconnected_cb=_ignore,
        closed_cb=closed_cb,
    )


async def _close_quietly(nc: NATS) -> None:
    with contextlib.suppress(Exception):
        await nc.close()


@contextlib.asynccontextmanager
async def nats_connection(
    settings: Settings, closed_cb: Callable[[], Awaitable[None]] = _ignore
) -> AsyncIterator[NATS]:
    """A NATS connection for one command, never reconnecting (``closed_cb`` says when it
    is gone); a lost connection becomes ``Unavailable``."""
    nc = await _connect(settings, closed_cb)
    try:
        yield nc
    except (ConnectionClosedError, StaleConnectionError, OSError):
        raise Unavailable(f"lost the connection to NATS at {redact(settings.nats_url)}") from None
    finally:
        await _close_quietly(nc)
