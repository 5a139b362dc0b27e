"""Agents' proof keys for the CLI: this user's agent key, public key files, the registry."""

from __future__ import annotations

import json
from pathlib import Path

import jwt
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from mcp_handshake.services.dev.cli._conn import nats_connection
from mcp_handshake.services.store import KeyRegistry
from mcp_handshake.shared.keys import PublicKey, public_jwk
from mcp_handshake.shared.proofs import ProofKey
from mcp_handshake.shared.settings import Settings, default_agent_key, make_private_dirs

__all__ = ["KeyFileError", "agent_key", "read_public_jwk", "register", "revoke"]


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


async def register(settings: Settings, sub: str, jwk: dict[str, object]) -> str:
    """Register a key in the registry (NATS KV, as the operator)."""
    async with nats_connection(settings.as_operator()) as nc:
        registry = KeyRegistry(nc.jetstream(), create=True, replicas=settings.stream_replicas)
        return await registry.register(sub, jwk)


async def revoke(settings: Settings, sub: str, kid: str) -> bool:
    async with nats_connection(settings.as_operator()) as nc:
        registry = KeyRegistry(nc.jetstream(), create=True, replicas=settings.stream_replicas)
        return await registry.revoke(sub, kid)
