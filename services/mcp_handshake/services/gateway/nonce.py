"""DPoP server nonces (RFC 9449 section 8), stateless across gateway replicas.

A nonce is ``<issued at>.<tag>``: the time it was issued (whole seconds) and an
HMAC-SHA256 of it under a key every replica shares (a file). It is accepted
for :data:`NONCE_TTL_S` after it was issued; a new one comes with every
execute response.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from pathlib import Path

__all__ = ["NONCE_TTL_S", "NonceIssuer"]

NONCE_TTL_S = 300
_MIN_KEY_BYTES = 32


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class NonceIssuer:
    def __init__(self, key: bytes, ttl_s: float = NONCE_TTL_S) -> None:
        if len(key) < _MIN_KEY_BYTES:
            raise ValueError(f"the DPoP nonce key needs at least {_MIN_KEY_BYTES} bytes")
        self._key = key
        self._ttl = ttl_s

    @classmethod
    def from_file(cls, path: Path) -> NonceIssuer:
        return cls(path.read_bytes().strip())

    def _tag(self, issued: str) -> str:
        return _b64(hmac.new(self._key, issued.encode(), hashlib.sha256).digest())

    def issue(self) -> str:
        issued = str(int(time.time()))
        return f"{issued}.{self._tag(issued)}"

    def valid(self, nonce: object) -> bool:
        if not isinstance(nonce, str) or len(nonce) > 128:
            return False
        issued, _, tag = nonce.partition(".")
        if not issued.isdigit() or not hmac.compare_digest(tag, self._tag(issued)):
            return False
        age = time.time() - int(issued)
        return -5 <= age <= self._ttl
