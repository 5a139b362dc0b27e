"""Proof of possession (protocol.md): a JWS over txn, tool, params hash, iat, jti.

The client signs with its own key (Ed25519 or P-256); the service checks the
key is the caller's (session ``cnf.jkt`` or the key registry) and the claims
match the transaction. PyJWT does all JWS work.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import jwt

from .batch import BATCH_PROOF_TYP, proof_ops
from .keys import PrivateKey, algorithm_for, load_or_create_private_key, public_jwk
from .protocol import DECISION_TYP, PROOF_TYP

__all__ = ["ProofKey"]


class ProofKey:
    """The agent's key: signs proofs, and its thumbprint binds sessions to it."""

    def __init__(self, key: PrivateKey) -> None:
        self._key = key
        self.alg = algorithm_for(key)
        full = public_jwk(key)
        self.thumbprint: str = full["kid"]
        #: The public JWK sent in proof headers (key members only).
        self.public_jwk = {k: v for k, v in full.items() if k in {"kty", "crv", "x", "y"}}
        self._headers = {"typ": PROOF_TYP, "kid": self.thumbprint, "jwk": self.public_jwk}

    @classmethod
    def load_or_create(cls, path: Path, alg: str = "EdDSA") -> ProofKey:
        return cls(load_or_create_private_key(path, alg))

    def sign(self, txn: str, tool: str, params_hash: str) -> str:
        """A proof of possession for executing ``txn`` (``Handshake-Proof`` on execute)."""
        return self._sign(self._headers, {"txn": txn, "tool": tool, "ph": params_hash})

    def sign_batch(self, pairs: list[tuple[str, str]]) -> str:
        """A batch proof (``handshake-batch-proof+jwt``) covering each ``(txn, params
        hash)`` pair (``Handshake-Proof`` on ``execute.batch``)."""
        headers = {**self._headers, "typ": BATCH_PROOF_TYP}
        return self._sign(headers, {"ops": proof_ops(pairs)})

    def sign_decision(self, txn: str, preview_hash: str, decision: str) -> str:
        """An approver's signed decision (``Handshake-Proof`` on ``approvals.decide``)."""
        headers = {**self._headers, "typ": DECISION_TYP}
        claims = {"txn": txn, "preview_hash": preview_hash, "decision": decision}
        return self._sign(headers, claims)

    def _sign(self, headers: dict[str, Any], claims: dict[str, Any]) -> str:
        body = {**claims, "iat": int(time.time()), "jti": uuid.uuid4().hex}
        return jwt.encode(body, self._key, self.alg, headers)
