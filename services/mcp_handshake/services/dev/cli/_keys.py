"""``mcp-handshake keys register``: store an agent's public key in the key registry."""

from __future__ import annotations

import json
from pathlib import Path

from cryptography.hazmat.primitives import serialization

from mcp_handshake.services.store import KeyRegistry, redis_client
from mcp_handshake.shared.keys import public_jwk
from mcp_handshake.shared.settings import Settings


def read_public_jwk(path: Path) -> dict[str, object]:
    data = path.read_bytes()
    if data.lstrip().startswith(b"{"):
        jwk: dict[str, object] = json.loads(data)
        return jwk
    if b"PRIVATE KEY" in data:
        key = serialization.load_pem_private_key(data, password=None)
        return public_jwk(key.public_key())  # type: ignore[arg-type]
    return public_jwk(serialization.load_pem_public_key(data))  # type: ignore[arg-type]


async def register(settings: Settings, sub: str, path: Path) -> str:
    redis = redis_client(settings)
    try:
        kid = await KeyRegistry(redis).register(sub, read_public_jwk(path))
    finally:
        await redis.aclose()
    return kid


async def revoke(settings: Settings, sub: str, kid: str) -> bool:
    redis = redis_client(settings)
    try:
        return await KeyRegistry(redis).revoke(sub, kid)
    finally:
        await redis.aclose()
