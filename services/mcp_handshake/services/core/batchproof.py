"""The proof of possession of a batch (``handshake-batch-proof+jwt``).

One JWS covers many operations: its ``ops`` claim lists ``[txn, ph]`` pairs.
It is checked like a single proof (EdDSA or ES256 only, a key bound to the
caller by ``cnf.jkt`` or the key registry, ``iat`` within 60 s, ``jti`` of 8 to
128 characters), once per batch. An operation is covered when its own
``[transaction id, params hash]`` pair is in ``ops``; one that needs a proof
and is not covered is refused (``validation_failed``) alone.

Single use: each covered operation claims its own jti, derived from the proof's
``jti`` and its transaction id (:func:`op_jti`), in the same atomic consume
step as a single proof's jti. A replayed batch proof therefore finds every
derived jti taken.
"""

from __future__ import annotations

import hashlib
import time

import jwt

from mcp_handshake.services.core.policy import Caller
from mcp_handshake.services.core.proofs import IAT_WINDOW_S, ProofVerifier, VerifiedProof
from mcp_handshake.shared.batch import BATCH_PROOF_TYP
from mcp_handshake.shared.errors import ValidationFailed
from mcp_handshake.shared.protocol import PROOF_ALGORITHMS

__all__ = ["BatchProof", "op_jti", "verify_batch_proof"]

#: A batch proof lists every pair it covers: bounded by the request size anyway.
MAX_BATCH_PROOF_BYTES = 256 * 1024


def op_jti(jti: str, txn: str) -> str:
    """The jti one operation claims: ``"b" +`` the first 32 hex digits of SHA-256 over
    ``"handshake-batch-jti\\0" + jti + "\\0" + txn`` (UTF-8)."""
    digest = hashlib.sha256(f"handshake-batch-jti\0{jti}\0{txn}".encode()).hexdigest()
    return "b" + digest[:32]


class BatchProof:
    """A verified batch proof: the pairs it covers and the key that signed it."""

    __slots__ = ("covered", "jti", "thumbprint")

    def __init__(self, covered: frozenset[tuple[str, str]], jti: str, thumbprint: str) -> None:
        self.covered = covered
        self.jti = jti
        self.thumbprint = thumbprint

    def for_op(self, txn: str, ph: str) -> VerifiedProof:
        """The proof of one operation, or ``ValidationFailed`` if it is not covered."""
        if (txn, ph) not in self.covered:
            raise ValidationFailed("batch proof does not cover this operation")
        return VerifiedProof(op_jti(self.jti, txn), self.thumbprint)


async def verify_batch_proof(
    verifier: ProofVerifier, proof: str | None, caller: Caller
) -> BatchProof:
    if not proof:
        raise ValidationFailed("proof of possession required (Handshake-Proof header)")
    if len(proof) > MAX_BATCH_PROOF_BYTES:
        raise ValidationFailed("proof too large")
    try:
        header = jwt.get_unverified_header(proof)
    except jwt.PyJWTError:
        raise ValidationFailed("proof is not a JWS") from None
    alg = header.get("alg")
    if header.get("typ") != BATCH_PROOF_TYP or alg not in PROOF_ALGORITHMS:
        raise ValidationFailed(f"proof must be a {BATCH_PROOF_TYP} signed with EdDSA or ES256")
    jwk, thumbprint = await verifier._bound_key(header, caller)
    try:
        key = jwt.PyJWK(jwk)
        if key.algorithm_name != alg:
            raise ValidationFailed("proof algorithm does not match its key")
        required = {"require": ["ops", "iat", "jti"]}
        claims = jwt.decode(proof, key.key, algorithms=[alg], options=required,  # type: ignore[arg-type]
                            leeway=IAT_WINDOW_S)  # fmt: skip
    except jwt.PyJWTError:
        raise ValidationFailed("proof signature or claims invalid") from None
    iat, jti, ops = claims["iat"], claims["jti"], claims["ops"]
    if not isinstance(iat, int | float) or abs(time.time() - iat) > IAT_WINDOW_S:
        raise ValidationFailed("proof iat outside the accepted window")
    if not isinstance(jti, str) or not 8 <= len(jti) <= 128:
        raise ValidationFailed("proof jti invalid")
    pairs = _pairs(ops)
    return BatchProof(pairs, jti, thumbprint)


def _pairs(ops: object) -> frozenset[tuple[str, str]]:
    if not isinstance(ops, list):
        raise ValidationFailed("proof ops must be a list of [txn, ph] pairs")
    pairs = set()
    for op in ops:
        if not (isinstance(op, list) and len(op) == 2 and all(isinstance(x, str) for x in op)):
            raise ValidationFailed("proof ops must be a list of [txn, ph] pairs")
        pairs.add((op[0], op[1]))
    return frozenset(pairs)
