"""Public keys registered per subject (``mcp-handshake keys register``), in NATS KV.

The registry is durable state with no expiry, so it lives in the JetStream
key-value bucket ``HANDSHAKE_KEYS`` (replicated with the NATS cluster), not in
Redis: a Redis restart that loses everything must not lock every internal-tier
caller out. One entry per key, ``<base64url(sub)>.<kid>`` (a subject may hold
any character; a KV key may not), the value the public JWK. Execute workers
read it (``STREAM.MSG.GET`` on ``KV_HANDSHAKE_KEYS``); the operator writes it.
A lookup that cannot reach the bucket is ``Unavailable``: fail closed.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from typing import Any

import jwt
from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig, StorageType
from nats.js.errors import APIError, BucketNotFoundError, KeyNotFoundError
from nats.js.kv import KeyValue

from mcp_handshake.shared.errors import Unavailable
from mcp_handshake.shared.keys import jwk_thumbprint

__all__ = ["KEYS_BUCKET", "KeyRegistry", "open_key_bucket"]

log = logging.getLogger(__name__)

KEYS_BUCKET = "HANDSHAKE_KEYS"


async def open_bucket(js: JetStreamContext, config: KeyValueConfig, *, create: bool) -> KeyValue:
    """A bucket, created when missing and ``create`` is set (never updated: an operator
    may create it first, e.g. with more replicas). Workers starting together may race to
    create it; the loser finds the winner's."""
    for attempt in range(20):
        try:
            return await js.key_value(config.bucket)
        except BucketNotFoundError:
            if not create:
                raise
        try:
            return await js.create_key_value(config)
        except APIError:
            if attempt == 19:
                raise
            await asyncio.sleep(0.25)
    raise AssertionError("unreachable")


async def open_key_bucket(js: JetStreamContext, *, create: bool, replicas: int = 1) -> KeyValue:
    """The registry's bucket: file storage, one revision per key, ``replicas`` copies
    when it is created here."""
    config = KeyValueConfig(bucket=KEYS_BUCKET, history=1, storage=StorageType.FILE,
                            direct=False, replicas=replicas)  # fmt: skip
    return await open_bucket(js, config, create=create)


def _entry(sub: str, kid: str) -> str:
    return base64.urlsafe_b64encode(sub.encode()).decode().rstrip("=") + "." + kid


def _valid_kid(kid: str) -> bool:
    return 0 < len(kid) <= 128 and all(c.isalnum() or c in "-_" for c in kid)


class KeyRegistry:
    """Keys per subject. Reads open the bucket lazily, so an execute worker started
    before any key was registered finds keys registered later."""

    def __init__(self, js: JetStreamContext, *, create: bool = False, replicas: int = 1) -> None:
        self._js = js
        self._create = create
        self._replicas = replicas
        self._kv: KeyValue | None = None

    async def _bucket(self) -> KeyValue:
        if self._kv is None:
            self._kv = await open_key_bucket(self._js, create=self._create, replicas=self._replicas)
        return self._kv

    async def register(self, sub: str, jwk: dict[str, Any]) -> str:
        """Register a public key for ``sub``; returns its RFC 7638 thumbprint (the kid)."""
        public = {k: v for k, v in jwk.items() if k in {"kty", "crv", "x", "y"}}
        jwt.PyJWK(public)  # refuse anything PyJWT cannot use
        kid = jwk_thumbprint(public)
        await (await self._bucket()).put(_entry(sub, kid), json.dumps(public).encode())
        return kid

    async def revoke(self, sub: str, kid: str) -> bool:
        if not _valid_kid(kid):
            return False
        kv = await self._bucket()
        try:
            await kv.get(_entry(sub, kid))
        except KeyNotFoundError:
            return False
        await kv.delete(_entry(sub, kid))
        return True

    async def lookup(self, sub: str, kid: str) -> dict[str, Any] | None:
        if not _valid_kid(kid):
            return None
        try:
            entry = await (await self._bucket()).get(_entry(sub, kid))
        except (BucketNotFoundError, KeyNotFoundError):
            return None
        except (NatsError, TimeoutError):
            log.warning("key registry unavailable")
            raise Unavailable("key registry unavailable; nothing was executed") from None
        return None if not entry.value else json.loads(entry.value)
