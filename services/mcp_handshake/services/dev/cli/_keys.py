"""Agents' proof keys for the CLI: this user's agent key, public key files, the registry."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import jwt
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from redis.asyncio import Redis
from redis.exceptions import AuthenticationError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeout

from mcp_handshake.services.store import KeyRegistry, redis_client
from mcp_handshake.shared.errors import Unauthenticated, Unavailable
from mcp_handshake.shared.keys import PublicKey, public_jwk
from mcp_handshake.shared.natsconn import redact
from mcp_handshake.shared.proofs import ProofKey
from mcp_handshake.shared.settings import Settings, default_agent_key, make_private_dirs

__all__ = ["KeyFileError", "agent_key", "read_public_jwk", "register", "revoke"]

T = TypeVar("T")


class KeyFileError(ValueError):
    """A key file that cannot be read or cannot sign proofs (message fit to print)."""


def agent_key(settings: Settings) -> ProofKey:
    """This user's agent key (``settings.agent_key``), created on first use: 0600 in a
    0700 directory, apart from the dev identity provider's keys."""
    path = settings.agent_key or default_agent_key({})
    make_private_dirs(path.parent)
    return ProofKey.load_or_create(path)


def _load_public_key(path: Path) -> PublicKey:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise KeyFileError(f"{path}: {exc.strerror or exc}") from None
    try:
        if data.lstrip().startswith(b"{"):
            key: object = jwt.PyJWK(json.loads(data)).key
        elif b"PRIVATE KEY" in data:
            key = serialization.load_pem_private_key(data, password=None)
        else:
            key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError, UnsupportedAlgorithm, jwt.PyJWTError):
        raise KeyFileError(f"{path}: neither a PEM key nor a JWK (JSON)") from None
    if isinstance(key, ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey):
        key = key.public_key()
    if isinstance(key, ed25519.Ed25519PublicKey) or (
        isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1)
    ):
        return key
    raise KeyFileError(f"{path}: only Ed25519 and P-256 keys can sign proofs")


def read_public_jwk(path: Path) -> dict[str, object]:
    """The public JWK of a key file (PEM public or private key, or JWK JSON), ``kid`` set
    to its RFC 7638 thumbprint; private members are never carried over."""
    return public_jwk(_load_public_key(path))


async def _with_redis(settings: Settings, fn: Callable[[Redis], Awaitable[T]]) -> T:
    """Run ``fn`` with a Redis client; an unreachable Redis becomes ``Unavailable``."""
    redis = redis_client(settings)
    try:
        return await fn(redis)
    except AuthenticationError:
        raise Unauthenticated(f"Redis at {redact(settings.redis_url)} refused") from None
    except (RedisConnectionError, RedisTimeout, OSError):
        raise Unavailable(f"cannot reach Redis at {redact(settings.redis_url)}") from None
    finally:
        with contextlib.suppress(Exception):
            await redis.aclose()


async def register(settings: Settings, sub: str, jwk: dict[str, object]) -> str:
    return await _with_redis(settings, lambda redis: KeyRegistry(redis).register(sub, jwk))


async def revoke(settings: Settings, sub: str, kid: str) -> bool:
    return await _with_redis(settings, lambda redis: KeyRegistry(redis).revoke(sub, kid))
