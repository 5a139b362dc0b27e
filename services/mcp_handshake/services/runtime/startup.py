"""A worker's start-up against a bus that is still coming up, retried for a bounded time.

A NATS cluster that has just started (or lost a node) answers JetStream requests with a
timeout or "unavailable" until its streams have elected leaders. A worker whose build
step meets that retries, with a fresh connection each time, for
``Settings.startup_timeout_s``; then it gives up with one line naming the step and the
last error. Anything else (refused credentials, a stream configured unsafely) is not
retried: it will not go away by waiting.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import nats.errors
from nats.js.errors import APIError, ServiceUnavailableError

from mcp_handshake.services.runtime.streams import StartupError
from mcp_handshake.shared.settings import Settings

__all__ = ["retry_transient", "transient"]

T = TypeVar("T")
#: Exit code of ``mcp-handshake`` for "unavailable" (dev/cli/_exits.py).
_EXIT_UNAVAILABLE = 8
_FIRST_PAUSE_S, _MAX_PAUSE_S = 0.25, 2.0

log = logging.getLogger(__name__)


def transient(exc: BaseException) -> bool:
    """Whether ``exc`` is the bus saying "not yet": a timeout, no responders, or 503
    (which nats-py also raises, without a code, when no JetStream answers at all)."""
    if isinstance(exc, nats.errors.TimeoutError | nats.errors.NoRespondersError
                  | ServiceUnavailableError):  # fmt: skip
        return True
    return isinstance(exc, APIError) and exc.code == 503


async def retry_transient(settings: Settings, kind: str, attempt: Callable[[], Awaitable[T]]) -> T:
    """``attempt()``'s result, retrying it while it fails with a :func:`transient` error,
    for at most ``settings.startup_timeout_s``; then a :class:`StartupError`."""
    started = time.monotonic()
    pause = _FIRST_PAUSE_S
    while True:
        try:
            return await attempt()
        except Exception as exc:
            if not transient(exc):
                raise
            waited = time.monotonic() - started
            if waited + pause > settings.startup_timeout_s:
                raise StartupError(
                    f"unavailable: {kind} worker gave up starting after {waited:.0f} s "
                    f"(HANDSHAKE_STARTUP_TIMEOUT_S={settings.startup_timeout_s:g}): "
                    f"JetStream kept answering {_describe(exc)}",
                    _EXIT_UNAVAILABLE,
                ) from None
            log.warning("%s start-up: JetStream answered %s; retrying (a cluster may still "
                        "be electing leaders)", kind, _describe(exc))  # fmt: skip
            await asyncio.sleep(pause)
            pause = min(pause * 2, _MAX_PAUSE_S)


def _describe(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__
