"""Fixed-window counters: per-caller rate limits and the confirmation agent's velocity."""

from __future__ import annotations

from mcp_handshake.shared.errors import RateLimited, Unavailable
from mcp_handshake.shared.subjects import Keys

from .redis import StoreError
from .scripts import Scripts

__all__ = ["Counters"]


class Counters:
    def __init__(self, scripts: Scripts) -> None:
        self._scripts = scripts

    async def count(self, key: str, window_s: float) -> tuple[int, float]:
        """Increment a fixed-window counter; returns (count, seconds left in the window)."""
        try:
            n, ttl = await self._scripts.call("count", [key], [int(window_s * 1000)])
        except StoreError:
            raise Unavailable("token store unavailable") from None
        return int(n), max(int(ttl), 0) / 1000

    async def rate_limit(self, sub: str, tool: str, requests: int, per_s: float) -> None:
        """``RateLimited`` (with a retry hint) once ``sub`` used up its window for ``tool``."""
        n, left = await self.count(Keys.rate(sub, tool), per_s)
        if n > requests:
            raise RateLimited(
                f"rate limit of {requests} per {per_s:g}s reached", retry_after_s=round(left, 3)
            )

    async def claim_once(self, key: str, ttl_s: float) -> bool:
        """Whether this is the first claim of ``key`` within ``ttl_s`` (SET NX)."""
        try:
            return bool(await self._scripts.redis.set(key, b"1", nx=True, px=int(ttl_s * 1000)))
        except StoreError:
            raise Unavailable("token store unavailable") from None

    async def velocity(self, sub: str, tool: str, window_s: float) -> int:
        """How many restricted requests of ``tool`` ``sub`` made in this window (this one
        included)."""
        n, _ = await self.count(Keys.velocity(sub, tool), window_s)
        return n
