"""The proof of possession of a batch (``handshake-batch-proof+jwt``).

One JWS covers many operations: its ``ops`` claim lists ``[txn, ph]`` pairs.
It is checked like a single proof (EdDSA, Ed25519 or ES256, a key bound to the
caller by ``cnf.jkt`` or the key registry, ``iat`` within 60 s, ``jti`` of 8 to
128 characters), once per batch. An operation is covered when its own
``[transaction id, params hash]`` pair is in ``ops``; one that needs a proof
and is not covered is refused (``validation_failed``) alone.

Single use: each covered operation claims its own jti, derived from the proof's
``jti`` and its transaction id (:func:`op_jti`), in the same atomic consume
step as a single proof's jti. A replayed batch proof therefore finds every
derived jti taken.

Over HTTP a batch may instead come with a DPoP proof of the request
(``POST .../v1/execute/batch``, checked by ``ProofVerifier.verify_dpop``): like a
DPoP proof at the single execute, it binds the request, not the operations, so it
proves every operation of that request (:class:`RequestProof`). Each operation
claims its own jti derived the same way; the DPoP proof's own jti is claimed once
for the whole request by the caller (``execute.batch``).
"""

from __future__ import annotations

import hashlib

from mcp_handshake.services.core.policy import Caller
from mcp_handshake.services.core.proofs import ProofVerifier, VerifiedProof
from mcp_handshake.shared.batch import BATCH_PROOF_TYP
from mcp_handshake.shared.errors import ValidationFailed

__all__ = ["BatchProof", "RequestProof", "op_jti", "verify_batch_proof"]

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


class RequestProof(BatchProof):
    """A verified DPoP proof of a whole batch request: it covers every operation."""

    __slots__ = ()

    def __init__(self, jti: str, thumbprint: str) -> None:
        super().__init__(frozenset(), jti, thumbprint)

    def for_op(self, txn: str, ph: str) -> VerifiedProof:
        return VerifiedProof(op_jti(self.jti, txn), self.thumbprint)


async def verify_batch_proof(
    verifier: ProofVerifier, proof: str | None, caller: Caller
) -> BatchProof:
    """Checked as a single proof is (:meth:`ProofVerifier.verify_jws`), then its ``ops``."""
    verified = await verifier.verify_jws(proof, caller, BATCH_PROOF_TYP, {}, ("ops",),
                                         max_bytes=MAX_BATCH_PROOF_BYTES)  # fmt: skip
    return BatchProof(_pairs(verified.claims["ops"]), verified.jti, verified.thumbprint)


def _pairs(ops: object) -> frozenset[tuple[str, str]]:
    if not isinstance(ops, list):
        raise ValidationFailed("proof ops must be a list of [txn, ph] pairs")
    pairs = set()
    for op in ops:
        if not (isinstance(op, list) and len(op) == 2 and all(isinstance(x, str) for x in op)):
            raise ValidationFailed("proof ops must be a list of [txn, ph] pairs")
        pairs.add((op[0], op[1]))
    return frozenset(pairs)
