"""The server's own NATS connection and client: long-lived, reconnecting, quiet."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator

from nats.aio.client import Client as NATS

from mcp_handshake.client import HandshakeClient, HandshakeError, SessionProvider
from mcp_handshake.shared.errors import Unauthenticated
from mcp_handshake.shared.natsconn import connect_bounded
from mcp_handshake.shared.proofs import ProofKey
from mcp_handshake.shared.settings import Settings, default_agent_key, make_private_dirs

__all__ = ["GuardedSession", "open_client"]

log = logging.getLogger("mcp_handshake.mcp")

#: The longest start-up waits for NATS before it reports ``unavailable``.
CONNECT_DEADLINE_S = 5.0


class GuardedSession:
    """A session provider whose failures (no token, a session command that failed)
    become ``unauthenticated`` tool errors instead of server errors."""

    def __init__(self, inner: SessionProvider) -> None:
        self._inner = inner

    async def token(self) -> str:
        try:
            return await self._inner.token()
        except HandshakeError:
            raise
        except Exception as exc:
            raise Unauthenticated(f"no session: {exc}") from None


async def _log_error(exc: Exception) -> None:
    # nats-py's default logs a traceback per failed attempt; one line is enough.
    log.warning("NATS: %s", type(exc).__name__)


async def _connect(settings: Settings) -> NATS:
    return await connect_bounded(
        settings,
        "mcp-handshake-mcp",
        CONNECT_DEADLINE_S,
        connect_timeout=2,
        max_reconnect_attempts=-1,  # a long-lived server rides out NATS restarts
        reconnect_time_wait=1,
        error_cb=_log_error,
    )


async def _close_quietly(nc: NATS) -> None:
    with contextlib.suppress(Exception):
        await nc.close()


@contextlib.asynccontextmanager
async def open_client(
    settings: Settings, session: SessionProvider
) -> AsyncIterator[HandshakeClient]:
    """A ``HandshakeClient`` as ``settings`` say: NATS identity, subject prefix, and the
    agent's proof key (``settings.agent_key``, never relative to the current directory)."""
    path = settings.agent_key or default_agent_key({})
    make_private_dirs(path.parent)
    key = ProofKey.load_or_create(path)
    nc = await _connect(settings)
    try:
        async with HandshakeClient(
            settings.nats_url.split(","),
            session=GuardedSession(session),
            prefix=settings.subject_prefix,
            nc=nc,
            proof_key=key,
        ) as client:
            yield client
    finally:
        await _close_quietly(nc)
