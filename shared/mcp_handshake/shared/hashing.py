"""Canonical hashes: params, results and tokens.

Canonical JSON is RFC 8785 (JCS) via the ``rfc8785`` package; we never write
our own canonicalization.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from typing import Any

import rfc8785

from .errors import InvalidParams

__all__ = [
    "TOKEN_BYTES",
    "canonical_json",
    "new_token",
    "params_hash",
    "sha256_tagged",
    "token_hash",
]

TOKEN_BYTES = 32


def canonical_json(value: Any) -> bytes:
    """The RFC 8785 canonical form of a JSON value."""
    return rfc8785.dumps(value)


def sha256_tagged(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def params_hash(params: Any) -> str:
    """``sha256:<hex>`` over the JCS form of normalized params (protocol.md, Params hash).

    Params JCS cannot represent (integers beyond 2**53, NaN, infinities) are
    ``InvalidParams``: they could not be hashed the same way by every client.
    """
    try:
        return sha256_tagged(canonical_json(params))
    except rfc8785.CanonicalizationError:
        raise InvalidParams("params hold a number outside the interoperable JSON range") from None


def new_token() -> str:
    """A fresh transaction token: 32 random bytes, base64url without padding."""
    return base64.urlsafe_b64encode(secrets.token_bytes(TOKEN_BYTES)).rstrip(b"=").decode()


def token_hash(token: str) -> str:
    """What the token store keeps instead of the token: hex SHA-256 of its text."""
    return hashlib.sha256(token.encode()).hexdigest()
