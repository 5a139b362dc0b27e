"""The Redis connection every part of the store shares."""

from __future__ import annotations

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from mcp_handshake.shared.settings import Settings

__all__ = ["POOL_SIZE", "POOL_WAIT_S", "redis_client"]

#: Connections per process. A burst beyond it waits for a free one (below).
POOL_SIZE = 256
#: How long a command may wait for a free pooled connection. A healthy Redis frees
#: one within milliseconds, so only a store that stopped answering reaches this, and
#: then the wait ends in ``ConnectionError``: ``unavailable``, never execution.
POOL_WAIT_S = 2.0


def redis_client(settings: Settings) -> Redis:
    """A Redis client that fails fast: a dead store must become ``unavailable`` in well
    under 2 s, and the pool reconnects by itself when the store is back.

    The pool waits (bounded) instead of refusing when all its connections are busy: a
    non-waiting pool raised "Too many connections" under a burst and turned a healthy
    store into false ``unavailable`` replies.
    """
    pool = BlockingConnectionPool.from_url(
        settings.redis_url,
        max_connections=POOL_SIZE,
        timeout=POOL_WAIT_S,
        socket_timeout=1.0,
        socket_connect_timeout=0.5,
        # One immediate retry: a pooled connection broken by a Redis restart is replaced
        # at once. Safe for every script we run (a re-run consume finds the token gone).
        # The retry runs on the connection already taken, so it never waits for the pool.
        retry=Retry(NoBackoff(), 1),
        health_check_interval=0,
    )
    return Redis.from_pool(pool)
