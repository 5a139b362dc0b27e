"""The first connection to NATS: a few attempts, then one line saying why not.

A failure (an untrusted certificate, refused credentials, no server) becomes a
:class:`StartupError` naming it. Once connected, reconnects are unlimited.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from typing import Any

import nats
from nats.aio.client import Client as NATS
from nats.errors import NoServersError

from mcp_handshake.services.runtime.streams import StartupError
from mcp_handshake.shared.natsconn import connect_options, identity_refused, redact
from mcp_handshake.shared.settings import Settings

__all__ = ["CONNECT_ATTEMPTS", "CONNECT_TIMEOUT_S", "connect_nats"]

#: Attempts per server for the first connection; afterwards reconnects never stop.
CONNECT_ATTEMPTS = 3
CONNECT_TIMEOUT_S = 5.0
#: Exit codes of ``mcp-handshake`` (dev/cli/_exits.py): auth, unavailable.
_EXIT_AUTH, _EXIT_UNAVAILABLE = 3, 8

log = logging.getLogger(__name__)


async def connect_nats(settings: Settings, name: str) -> NATS:
    """Connect, with :data:`CONNECT_ATTEMPTS` per server for the first connection; then
    unlimited reconnects. Raises :class:`StartupError` saying why it could not connect."""
    errors: list[BaseException] = []
    connected = False

    async def on_error(exc: Exception) -> None:
        if connected:
            log.warning("NATS error: %s", type(exc).__name__)
        else:
            errors.append(exc)

    async def on_disconnect() -> None:
        # Not when the connection was closed on purpose (a start-up attempt retried).
        if connected and not nc.is_closed:
            log.warning("NATS disconnected; reconnecting")

    async def on_reconnect() -> None:
        log.info("NATS reconnected")

    options: dict[str, Any] = {
        **connect_options(settings, name),
        "reconnect_time_wait": 0.5,
        "connect_timeout": CONNECT_TIMEOUT_S,
    }
    # Each first attempt runs without nats-py's own retries: after a failed TLS upgrade
    # its retry path waits forever for the old socket to close; and it retries a refused
    # server inside one connect() up to max_reconnect_attempts, allow_reconnect or not.
    for attempt in range(CONNECT_ATTEMPTS * max(len(options["servers"]), 1)):
        if attempt:
            await asyncio.sleep(0.5)
        nc = NATS()
        try:
            await nc.connect(
                **options,
                allow_reconnect=False,
                max_reconnect_attempts=1,
                error_cb=on_error,
                disconnected_cb=on_disconnect,
                reconnected_cb=on_reconnect,
            )
        except (OSError, TimeoutError, nats.errors.Error) as exc:
            errors.append(exc)
            _abandon(nc)
            continue
        connected = True
        # From now on a lost server is waited for, however long it takes.
        nc.options["allow_reconnect"] = True
        nc.options["max_reconnect_attempts"] = -1
        return nc
    raise _connect_error(settings, errors)


def _abandon(nc: NATS) -> None:
    """Drop the socket of a failed first attempt (nats-py leaves it open)."""
    transport = getattr(nc, "_transport", None)
    with contextlib.suppress(Exception):
        if transport is not None:
            transport.close()


def _connect_error(settings: Settings, errors: list[BaseException]) -> StartupError:
    """One line for why the first connection failed, the most telling error first."""
    where = redact(settings.nats_url)
    for exc in errors:
        if isinstance(exc, ssl.SSLCertVerificationError):
            reason = exc.verify_message or "certificate verify failed"
            return StartupError(f"unavailable: TLS handshake with NATS at {where} failed: "
                                f"{reason} (HANDSHAKE_NATS_TLS_CA)", _EXIT_UNAVAILABLE)  # fmt: skip
        if isinstance(exc, ssl.SSLError):
            return StartupError(f"unavailable: TLS handshake with NATS at {where} failed: "
                                f"{exc.reason or exc}", _EXIT_UNAVAILABLE)  # fmt: skip
    for exc in errors:
        if identity_refused(exc):
            who = settings.nats_user or "the configured identity"
            return StartupError(f"unauthenticated: NATS at {where} refused the credentials "
                                f"of {who}", _EXIT_AUTH)  # fmt: skip
    last = errors[-1]
    named = isinstance(last, NoServersError) or not str(last)
    detail = type(last).__name__ if named else str(last)
    return StartupError(f"unavailable: cannot connect to NATS at {where} ({detail})",
                        _EXIT_UNAVAILABLE)  # fmt: skip
