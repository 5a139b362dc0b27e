"""Checking proofs of possession (internal tier and above).

A proof is accepted when it is a ``handshake-proof+jwt`` JWS (EdDSA or ES256
only), signed by a key bound to the caller (the session's ``cnf.jkt``
thumbprint, RFC 7638, or a key registered for the caller's subject), with
claims for exactly this transaction, tool and params hash, and ``iat`` within
60 s of now. ``jti`` single use is enforced by the token store, in the same
atomic step that consumes the token. A DPoP proof (RFC 9449) is accepted in its
place at execute (:meth:`ProofVerifier.verify_dpop`, see ``core.dpop``), checked
by the same steps with its own ``typ`` and claims.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Protocol

import jwt

from mcp_handshake.services.core import dpop
from mcp_handshake.services.core.policy import Caller
from mcp_handshake.shared.errors import ValidationFailed
from mcp_handshake.shared.keys import jwk_thumbprint
from mcp_handshake.shared.protocol import DECISION_TYP, PROOF_ALGORITHMS, PROOF_TYP

__all__ = ["KeyLookup", "ProofVerifier", "VerifiedProof", "decision_signer"]

log = logging.getLogger(__name__)

MAX_PROOF_BYTES = 4096
IAT_WINDOW_S = 60


class KeyLookup(Protocol):
    """Where keys registered per subject are found (the store's key registry)."""

    async def lookup(self, sub: str, kid: str) -> dict[str, Any] | None: ...


class VerifiedProof:
    __slots__ = ("claims", "jti", "thumbprint")

    def __init__(self, jti: str, thumbprint: str, claims: dict[str, Any] | None = None) -> None:
        self.jti = jti
        self.thumbprint = thumbprint
        self.claims = claims or {}


class ProofVerifier:
    def __init__(self, registry: KeyLookup) -> None:
        self._registry = registry

    async def verify(
        self, proof: str | None, caller: Caller, *, txn: str, tool: str, ph: str
    ) -> VerifiedProof:
        """A proof of possession for executing ``txn`` (``handshake-proof+jwt``)."""
        return await self._verify(proof, caller, PROOF_TYP, {"txn": txn, "tool": tool, "ph": ph})

    async def verify_decision(
        self, signature: str | None, caller: Caller, *, txn: str, preview_hash: str, decision: str
    ) -> VerifiedProof:
        """An approver's signed decision over ``{txn, preview_hash, decision}``
        (``handshake-decision+jwt``), by a key bound to the approver like a proof's."""
        expected = {"txn": txn, "preview_hash": preview_hash, "decision": decision}
        return await self._verify(signature, caller, DECISION_TYP, expected)

    async def verify_dpop(
        self, proof: str, caller: Caller, *, htu: str | None, authorization: str | None
    ) -> VerifiedProof:
        """A DPoP proof (RFC 9449) for ``POST`` to the execute URI ``htu``, bound to the
        session it came with (``ath``); see :mod:`~mcp_handshake.services.core.dpop`."""
        token = dpop.bearer_token(authorization)
        target = dpop.normalize_htu(htu or "")
        if (
            token is None
            or target is None
            or not target.endswith((dpop.EXECUTE_PATH, dpop.MCP_PATH))
        ):
            raise ValidationFailed("DPoP proof without the execute URI it was sent to")
        try:
            jwk = jwt.get_unverified_header(proof).get("jwk")
        except jwt.PyJWTError:
            raise ValidationFailed("proof is not a JWS") from None
        if not isinstance(jwk, dict) or not dpop.is_public_jwk(jwk):
            raise ValidationFailed("DPoP proof must carry its public key (jwk header)")
        expected = {"htm": dpop.EXECUTE_METHOD, "ath": dpop.access_token_hash(token)}
        verified = await self._verify(proof, caller, dpop.DPOP_TYP, expected, ("htu",))
        if dpop.normalize_htu(str(verified.claims["htu"])) != target:
            raise ValidationFailed("DPoP proof is for another URI")
        return verified

    async def _verify(
        self,
        proof: str | None,
        caller: Caller,
        typ: str,
        expected: dict[str, str],
        required: tuple[str, ...] = (),
    ) -> VerifiedProof:
        if not proof:
            raise ValidationFailed("proof of possession required (Handshake-Proof header)")
        if len(proof) > MAX_PROOF_BYTES:
            raise ValidationFailed("proof too large")
        try:
            header = jwt.get_unverified_header(proof)
        except jwt.PyJWTError:
            raise ValidationFailed("proof is not a JWS") from None
        alg = header.get("alg")
        if header.get("typ") != typ or alg not in PROOF_ALGORITHMS:
            raise ValidationFailed(f"proof must be a {typ} signed with EdDSA or ES256")
        jwk, thumbprint = await self._bound_key(header, caller)
        try:
            key = jwt.PyJWK(jwk)
            if key.algorithm_name != alg:
                raise ValidationFailed("proof algorithm does not match its key")
            claims = jwt.decode(
                proof,
                key.key,
                algorithms=[alg],
                options={"require": [*expected, *required, "iat", "jti"]},
                leeway=IAT_WINDOW_S,
            )
        except jwt.PyJWTError:
            raise ValidationFailed("proof signature or claims invalid") from None
        iat = claims["iat"]
        if not isinstance(iat, int | float) or abs(time.time() - iat) > IAT_WINDOW_S:
            raise ValidationFailed("proof iat outside the accepted window")
        if any(claims[name] != value for name, value in expected.items()):
            raise ValidationFailed(f"proof is for another {'/'.join(expected)}")
        jti = claims["jti"]
        if not isinstance(jti, str) or not 8 <= len(jti) <= 128:
            raise ValidationFailed("proof jti invalid")
        return VerifiedProof(jti, thumbprint, claims)

    async def _bound_key(
        self, header: dict[str, Any], caller: Caller
    ) -> tuple[dict[str, Any], str]:
        """The proof's key, if it is bound to the caller; else ``ValidationFailed``.

        A session with ``cnf.jkt`` is bound to exactly that key (RFC 9449
        semantics); otherwise the key must be registered for the subject.
        """
        embedded = header.get("jwk")
        if caller.jkt is not None:
            if not isinstance(embedded, dict):
                raise ValidationFailed("proof must carry the session-bound key (jwk header)")
            try:
                thumbprint = jwk_thumbprint(embedded)
            except (KeyError, ValueError):
                raise ValidationFailed("proof jwk unusable") from None
            if thumbprint != caller.jkt:
                raise ValidationFailed("proof key is not the key this session is bound to")
            return embedded, thumbprint
        kid = header.get("kid")
        if isinstance(embedded, dict):
            try:
                kid = jwk_thumbprint(embedded)
            except (KeyError, ValueError):
                raise ValidationFailed("proof jwk unusable") from None
        if not isinstance(kid, str):
            raise ValidationFailed("proof names no key")
        registered = await self._registry.lookup(caller.sub, kid)
        if registered is None:
            raise ValidationFailed("proof key is not registered for this caller")
        return registered, kid


def decision_signer(signature: str, *, txn: str, preview_hash: str, decision: str) -> str | None:
    """The RFC 7638 thumbprint of the key that signed this decision, if the signature
    verifies with the key it carries (``jwk`` header) and covers exactly this decision;
    else ``None``. For reading the audit trail: who is bound to that key is a matter of
    the session (``cnf.jkt``) or the key registry at the time of the decision."""
    try:
        header = jwt.get_unverified_header(signature)
        jwk = header.get("jwk")
        if header.get("typ") != DECISION_TYP or not isinstance(jwk, dict):
            return None
        key = jwt.PyJWK(jwk)
        claims = jwt.decode(signature, key.key, algorithms=[key.algorithm_name],
                            options={"verify_iat": False})  # fmt: skip
    except (jwt.PyJWTError, KeyError, ValueError):
        return None
    expected = {"txn": txn, "preview_hash": preview_hash, "decision": decision}
    if any(claims.get(name) != value for name, value in expected.items()):
        return None
    return jwk_thumbprint(jwk)
