"""The Redis connection every part of the store shares."""

from __future__ import annotations

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from mcp_handshake.shared.settings import Settings

__all__ = ["redis_client"]


def redis_client(settings: Settings) -> Redis:
    """A Redis client that fails fast: a dead store must become ``unavailable`` in well
    under 2 s, and the pool reconnects by itself when the store is back."""
    return Redis.from_url(
        settings.redis_url,
        socket_timeout=1.0,
        socket_connect_timeout=0.5,
        # One immediate retry: a pooled connection broken by a Redis restart is replaced
        # at once. Safe for every script we run (a re-run consume finds the token gone).
        retry=Retry(NoBackoff(), 1),
        max_connections=256,
        health_check_interval=0,
    )
