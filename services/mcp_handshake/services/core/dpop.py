"""DPoP (RFC 9449) proofs as a proof of possession for execute.

An agent on HTTP proves possession of its key with a standard DPoP proof
instead of a ``handshake-proof+jwt``. The gateway forwards the proof in the
``DPoP`` header of the NATS execute request, with the URI it was sent to in
``Handshake-DPoP-Htu``; the execute worker verifies it (``ProofVerifier.
verify_dpop``), so the gateway cannot vouch for a proof it did not get.

A DPoP proof for execute must be for ``POST`` to a URI whose path ends in
:data:`EXECUTE_PATH`, and carry ``ath``, the hash of the session JWT it is
sent with. ``htu`` is compared without query and fragment, after the
normalization below (scheme and host lower case, default port dropped).
"""

from __future__ import annotations

import base64
import hashlib
from typing import Any
from urllib.parse import urlsplit

__all__ = [
    "DPOP_HEADER",
    "DPOP_HTU_HEADER",
    "DPOP_TYP",
    "EXECUTE_METHOD",
    "EXECUTE_PATH",
    "MCP_PATH",
    "PRIVATE_JWK_MEMBERS",
    "access_token_hash",
    "bearer_token",
    "is_public_jwk",
    "normalize_htu",
]

#: The proof, as RFC 9449 names its header (over HTTP and over NATS alike).
DPOP_HEADER = "DPoP"
#: Over NATS: the URI the gateway received the proof on (``htu`` must match it).
DPOP_HTU_HEADER = "Handshake-DPoP-Htu"
DPOP_TYP = "dpop+jwt"
EXECUTE_METHOD = "POST"
EXECUTE_PATH = "/v1/execute"
#: The gateway's MCP endpoint: a tool call there carries the DPoP proof for its execute.
MCP_PATH = "/mcp"
#: JWK members that only a private key has: a proof carrying one is refused.
PRIVATE_JWK_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})

_DEFAULT_PORTS = {"http": 80, "https": 443}


def normalize_htu(uri: str) -> str | None:
    """``scheme://host[:port]/path`` of an absolute http(s) URI, without query or
    fragment, scheme and host lower case, a default port dropped; ``None`` if it is
    not one."""
    try:
        parts = urlsplit(uri)
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    if scheme not in _DEFAULT_PORTS or not host or parts.username or parts.password:
        return None
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    netloc = host if port in (None, _DEFAULT_PORTS[scheme]) else f"{host}:{port}"
    return f"{scheme}://{netloc}{parts.path or '/'}"


def access_token_hash(token: str) -> str:
    """RFC 9449 ``ath``: base64url (no padding) SHA-256 of the access token's ASCII."""
    digest = hashlib.sha256(token.encode("ascii", "replace")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` (or ``DPoP <token>``) header."""
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() not in ("bearer", "dpop") or not token.strip():
        return None
    return token.strip()


def is_public_jwk(jwk: Any) -> bool:
    return isinstance(jwk, dict) and not (PRIVATE_JWK_MEMBERS & set(jwk))
