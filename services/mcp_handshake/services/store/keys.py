"""Public keys registered per subject (``mcp-handshake keys register``)."""

from __future__ import annotations

import json
from typing import Any

import jwt
from redis.asyncio import Redis
from redis.exceptions import RedisError

from mcp_handshake.shared.errors import Unavailable
from mcp_handshake.shared.keys import jwk_thumbprint
from mcp_handshake.shared.subjects import Keys

__all__ = ["KeyRegistry"]


class KeyRegistry:
    def __init__(self, redis: Redis) -> None:
        self._redis = redis

    async def register(self, sub: str, jwk: dict[str, Any]) -> str:
        """Register a public key for ``sub``; returns its RFC 7638 thumbprint (the kid)."""
        public = {k: v for k, v in jwk.items() if k in {"kty", "crv", "x", "y"}}
        jwt.PyJWK(public)  # refuse anything PyJWT cannot use
        kid = jwk_thumbprint(public)
        await self._redis.hset(Keys.pubkeys(sub), kid, json.dumps(public))
        return kid

    async def revoke(self, sub: str, kid: str) -> bool:
        return bool(await self._redis.hdel(Keys.pubkeys(sub), kid))

    async def lookup(self, sub: str, kid: str) -> dict[str, Any] | None:
        try:
            raw = await self._redis.hget(Keys.pubkeys(sub), kid)
        except RedisError:
            raise Unavailable("key registry unavailable; nothing was executed") from None
        return None if raw is None else json.loads(raw)
