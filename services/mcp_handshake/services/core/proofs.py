"""Checking proofs of possession (internal tier and above).

A proof is accepted when it is a ``handshake-proof+jwt`` JWS (EdDSA or ES256
only; ``Ed25519``, RFC 9864's fully specified name for EdDSA over Ed25519, is
EdDSA), signed by a key bound to the caller (the session's ``cnf.jkt``
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
from jwt.algorithms import OKPAlgorithm

from mcp_handshake.services.core import dpop
from mcp_handshake.services.core.policy import Caller
from mcp_handshake.shared.errors import ValidationFailed
from mcp_handshake.shared.keys import jwk_thumbprint
from mcp_handshake.shared.protocol import DECISION_TYP, PROOF_ALGORITHMS, PROOF_TYP

__all__ = [
    "ACCEPTED_ALGORITHMS",
    "KeyLookup",
    "ProofVerifier",
    "VerifiedProof",
    "alg_accepted",
    "decision_signer",
]

log = logging.getLogger(__name__)

MAX_PROOF_BYTES = 4096
IAT_WINDOW_S = 60
#: RFC 9864: ``Ed25519`` names EdDSA with an Ed25519 key (what panva's ``dpop`` sends).
ED25519 = "Ed25519"
ACCEPTED_ALGORITHMS = (*PROOF_ALGORITHMS, ED25519)
#: Signatures are checked by PyJWS (EdDSA for ``Ed25519`` too); claims by PyJWT after it.
_JWS = jwt.PyJWS(algorithms=list(PROOF_ALGORITHMS))
_JWS.register_algorithm(ED25519, OKPAlgorithm())


def alg_accepted(alg: object, jwk: dict[str, Any]) -> bool:
    """Whether ``alg`` is one we accept, and the one ``jwk`` (a public JWK) signs with."""
    if alg == ED25519:
        return jwk.get("kty") == "OKP" and jwk.get("crv") == ED25519
    try:
        return alg in PROOF_ALGORITHMS and jwt.PyJWK(jwk).algorithm_name == alg
    except (jwt.PyJWTError, KeyError, ValueError):
        return False


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
    def __init__(
        self,
        registry: KeyLookup,
        gateway_key: dpop.GatewayKey | None = None,
        nonces: dpop.NonceIssuer | None = None,
    ) -> None:
        """``gateway_key``: the key shared with gateways, without which no forwarded
        ``htu`` is honoured; ``nonces``: DPoP server nonces, required when given."""
        self._registry = registry
        self._gateway = gateway_key
        self._nonces = nonces

    async def verify(
        self, proof: str | None, caller: Caller, *, txn: str, tool: str, ph: str
    ) -> VerifiedProof:
        """A proof of possession for executing ``txn`` (``handshake-proof+jwt``)."""
        return await self.verify_jws(proof, caller, PROOF_TYP, {"txn": txn, "tool": tool, "ph": ph})

    async def verify_decision(
        self, signature: str | None, caller: Caller, *, txn: str, preview_hash: str, decision: str
    ) -> VerifiedProof:
        """An approver's signed decision over ``{txn, preview_hash, decision}``
        (``handshake-decision+jwt``), by a key bound to the approver like a proof's."""
        expected = {"txn": txn, "preview_hash": preview_hash, "decision": decision}
        return await self.verify_jws(signature, caller, DECISION_TYP, expected)

    async def verify_dpop(
        self,
        proof: str,
        caller: Caller,
        *,
        htu: str | None,
        htu_tag: str | None,
        authorization: str | None,
        paths: tuple[str, ...] = (dpop.EXECUTE_PATH, dpop.MCP_PATH),
    ) -> VerifiedProof:
        """A DPoP proof (RFC 9449) for ``POST`` to the execute URI ``htu`` (honoured only
        with a gateway's ``htu_tag``; its path ends in one of ``paths``), bound to the
        session it came with (``ath``), with a live server nonce where they are enforced;
        see :mod:`~mcp_handshake.services.core.dpop`."""
        vouched = self._gateway is not None and self._gateway.valid(htu or "", proof, htu_tag)
        if htu is not None and not vouched:
            raise ValidationFailed(f"{dpop.DPOP_HTU_HEADER} is honoured only from the gateway")
        token = dpop.bearer_token(authorization)
        target = dpop.normalize_htu(htu or "")
        if token is None or target is None or not target.endswith(paths):
            raise ValidationFailed("DPoP proof without the execute URI it was sent to")
        try:
            jwk = jwt.get_unverified_header(proof).get("jwk")
        except jwt.PyJWTError:
            raise ValidationFailed("proof is not a JWS") from None
        if not isinstance(jwk, dict) or not dpop.is_public_jwk(jwk):
            raise ValidationFailed("DPoP proof must carry its public key (jwk header)")
        expected = {"htm": dpop.EXECUTE_METHOD, "ath": dpop.access_token_hash(token)}
        verified = await self.verify_jws(proof, caller, dpop.DPOP_TYP, expected, ("htu",))
        if dpop.normalize_htu(str(verified.claims["htu"])) != target:
            raise ValidationFailed("DPoP proof is for another URI")
        if self._nonces is not None and not self._nonces.valid(verified.claims.get("nonce")):
            raise ValidationFailed("DPoP proof without a live server nonce")
        return verified

    async def verify_jws(
        self,
        proof: str | None,
        caller: Caller,
        typ: str,
        expected: dict[str, str],
        required: tuple[str, ...] = (),
        max_bytes: int = MAX_PROOF_BYTES,
    ) -> VerifiedProof:
        """A proof of type ``typ`` signed by a key bound to ``caller``, its ``iat`` in the
        window, its ``jti`` well formed, and the claims ``expected`` (and ``required``)."""
        if not proof:
            raise ValidationFailed("proof of possession required (Handshake-Proof header)")
        if len(proof) > max_bytes:
            raise ValidationFailed("proof too large")
        try:
            header = jwt.get_unverified_header(proof)
        except jwt.PyJWTError:
            raise ValidationFailed("proof is not a JWS") from None
        alg = header.get("alg")
        if header.get("typ") != typ or alg not in ACCEPTED_ALGORITHMS:
            raise ValidationFailed(f"proof must be a {typ} signed with EdDSA or ES256")
        jwk, thumbprint = await self._bound_key(header, caller)
        if not alg_accepted(alg, jwk):
            raise ValidationFailed("proof algorithm does not match its key")
        try:
            _JWS.decode_complete(proof, jwt.PyJWK(jwk).key, algorithms=[alg])
            claims = jwt.decode(
                proof,
                # PyJWT's claim checks, as when it verifies the signature (an aud is refused)
                options={"verify_signature": False, "verify_exp": True, "verify_nbf": True,
                         "verify_iat": True, "verify_aud": True, "verify_iss": True,
                         "verify_sub": True, "verify_jti": True,
                         "require": [*expected, *required, "iat", "jti"]},
                leeway=IAT_WINDOW_S,
            )  # fmt: skip
        except (jwt.PyJWTError, KeyError, ValueError):
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
