"""A DPoP proof (RFC 9449) on its way from an HTTP request to the execute worker.

The gateway refuses what it can before forwarding, so the tokens are not used up (a
proof that is not a DPoP JWS of an accepted ``alg``; with server nonces, one without a
live nonce), and vouches for the URI it received the proof on: ``Handshake-DPoP-Htu``,
its configured public URL and the request's path, tagged with the gateway key. The
execute worker verifies everything else (``ProofVerifier.verify_dpop``). Used by
``POST /v1/execute`` and ``POST /v1/execute/batch`` alike.
"""

from __future__ import annotations

from typing import Any

import jwt
from starlette.requests import Request

from mcp_handshake.services.core.dpop import (
    DPOP_HEADER,
    DPOP_HTU_HEADER,
    DPOP_HTU_TAG_HEADER,
    DPOP_TYP,
)
from mcp_handshake.services.core.proofs import ACCEPTED_ALGORITHMS
from mcp_handshake.services.gateway.errors import UseDpopNonce
from mcp_handshake.services.gateway.forward import GatewayOptions
from mcp_handshake.services.gateway.nonce import NonceIssuer
from mcp_handshake.shared.errors import BadRequest, ValidationFailed
from mcp_handshake.shared.protocol import PROOF_HEADER

__all__ = ["check_proof", "execute_uri", "nonce_header", "vouch"]


def execute_uri(request: Request, public_url: str | None) -> str:
    """The URI this execute request was sent to, as a DPoP proof's ``htu`` must name it:
    the configured public URL and the path (never the request's Host or scheme)."""
    if not public_url:
        raise ValidationFailed("this gateway has no public URL configured; DPoP is refused")
    return public_url.rstrip("/") + request.url.path


def check_proof(proof: str, nonces: NonceIssuer | None) -> None:
    """What can be refused before forwarding, so the token is not used up: a proof that
    is not a DPoP JWS of an accepted ``alg``, and (with server nonces) one without a live
    nonce. The execute worker verifies everything, the nonce included."""
    try:
        header = jwt.get_unverified_header(proof)
        claims: dict[str, Any] = jwt.decode(proof, options={"verify_signature": False})
    except jwt.PyJWTError:
        return  # not a JWS: the execute worker refuses it
    if header.get("typ") != DPOP_TYP or header.get("alg") not in ACCEPTED_ALGORITHMS:
        algs = ", ".join(ACCEPTED_ALGORITHMS)
        raise ValidationFailed(f"a DPoP proof must be a {DPOP_TYP} signed with {algs}")
    if nonces is not None and not nonces.valid(claims.get("nonce")):
        raise UseDpopNonce()


def vouch(request: Request, headers: dict[str, str], options: GatewayOptions) -> None:
    """With a ``DPoP`` header among the forwarded ``headers``: refuse it together with
    ``Handshake-Proof`` (one proof or the other), check what the gateway checks, and add
    the URI it was received on with its tag. Without one, nothing changes."""
    proof = headers.get(DPOP_HEADER)
    if proof is None:
        return
    if PROOF_HEADER in headers:
        raise BadRequest("send either a DPoP or a Handshake-Proof header, not both")
    check_proof(proof, options.nonces)
    key = options.gateway_key
    if key is None:
        raise ValidationFailed("this gateway has no gateway key; DPoP is refused")
    htu = execute_uri(request, options.public_url)
    headers[DPOP_HTU_HEADER], headers[DPOP_HTU_TAG_HEADER] = htu, key.tag(htu, proof)


def nonce_header(options: GatewayOptions) -> dict[str, str]:
    """A fresh ``DPoP-Nonce`` for every execute response, where nonces are on."""
    return {"DPoP-Nonce": options.nonces.issue()} if options.nonces else {}
