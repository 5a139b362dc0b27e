"""Receipts and dispatch signatures (JWS via PyJWT; keys via ``cryptography``).

* Receipts: compact JWS, ``typ: handshake-receipt+jwt``, EdDSA, verifiable by
  anyone holding the JWKS served on ``handshake.v1.keys``.
* Dispatches: every message an execute worker sends to an executor carries a
  detached JWS over the exact body bytes; executors hold only the public key
  and run nothing whose signature does not verify.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jwt
import msgspec

from mcp_handshake.shared.batchreceipt import BATCH_RECEIPT_TYP
from mcp_handshake.shared.keys import (
    PrivateKey,
    algorithm_for,
    load_private_key,
    public_jwk,
)
from mcp_handshake.shared.protocol import DISPATCH_TYP, RECEIPT_TYP

__all__ = ["DispatchSigner", "DispatchVerifier", "ReceiptSigner"]


class ReceiptSigner:
    def __init__(self, key: PrivateKey, issuer: str) -> None:
        self._key = key
        self._alg = algorithm_for(key)
        self.jwk = public_jwk(key)
        self._headers = {"typ": RECEIPT_TYP, "kid": self.jwk["kid"]}
        self._root_headers = {"typ": BATCH_RECEIPT_TYP, "kid": self.jwk["kid"]}
        self.issuer = issuer

    @classmethod
    def from_file(cls, path: Path, issuer: str) -> ReceiptSigner:
        return cls(load_private_key(path), issuer)

    def jwks(self) -> dict[str, Any]:
        return {"keys": [self.jwk]}

    def sign(self, claims: Mapping[str, Any]) -> str:
        # The claims JSON-encoded by msgspec (~5 µs less than jwt.encode's json.dumps)
        # and signed by PyJWT's JWS layer: the same compact JWT either way.
        payload = msgspec.json.encode({"iss": self.issuer, **claims})
        return jwt.api_jws.encode(payload, self._key, self._alg, self._headers)

    def sign_root(self, claims: Mapping[str, Any]) -> str:
        """A batch's Merkle root (``typ: handshake-batch-receipt+jwt``), same key."""
        payload = msgspec.json.encode({"iss": self.issuer, **claims})
        return jwt.api_jws.encode(payload, self._key, self._alg, self._root_headers)


class DispatchSigner:
    """Signs internal message bodies (detached JWS); ``typ`` tells the message kind."""

    def __init__(self, key: PrivateKey, typ: str = DISPATCH_TYP) -> None:
        self._key = key
        self._alg = algorithm_for(key)
        self.jwk = public_jwk(key)
        self._headers = {"typ": typ, "kid": self.jwk["kid"]}

    @classmethod
    def from_file(cls, path: Path, typ: str = DISPATCH_TYP) -> DispatchSigner:
        return cls(load_private_key(path), typ)

    def sign(self, body: bytes) -> str:
        return jwt.api_jws.encode(
            body, self._key, self._alg, self._headers, is_payload_detached=True
        )


class DispatchVerifier:
    """Verifies dispatch signatures with public keys only."""

    def __init__(self, jwks: Mapping[str, Any], typ: str = DISPATCH_TYP) -> None:
        self._typ = typ
        self._keys: dict[str, jwt.PyJWK] = {}
        for data in jwks.get("keys", []):
            key = jwt.PyJWK(data)
            if data.get("kid"):
                self._keys[data["kid"]] = key
        if not self._keys:
            raise ValueError("dispatch key set is empty")

    @classmethod
    def from_file(cls, path: Path, typ: str = DISPATCH_TYP) -> DispatchVerifier:
        return cls(json.loads(path.read_text()), typ)

    def verify(self, signature: str | None, body: bytes) -> bool:
        if not signature:
            return False
        try:
            if len(self._keys) == 1:
                # One key: decode once with it (header parsing is costly in PyJWT)
                ((kid, key),) = self._keys.items()
            else:
                kid = jwt.get_unverified_header(signature).get("kid", "")
                if kid not in self._keys:
                    return False
                key = self._keys[kid]
            header = jwt.api_jws.decode_complete(
                signature, key.key, algorithms=[key.algorithm_name], detached_payload=body
            )["header"]
        except jwt.PyJWTError:
            return False
        return bool(header.get("typ") == self._typ and header.get("kid") == kid)
