"""DPoP (RFC 9449) proofs as a proof of possession for execute.

An agent on HTTP proves possession of its key with a standard DPoP proof
instead of a ``handshake-proof+jwt``. The gateway forwards the proof in the
``DPoP`` header of the NATS execute request, with the URI it was sent to in
``Handshake-DPoP-Htu``; the execute worker verifies it (``ProofVerifier.
verify_dpop``), so the gateway cannot vouch for a proof it did not get.

A DPoP proof for execute must be for ``POST`` to a URI whose path ends in
:data:`EXECUTE_PATH` (or :data:`MCP_PATH`; for an execute batch,
:data:`EXECUTE_BATCH_PATH`), and carry ``ath``, the hash of the session JWT it is
sent with. ``htu`` is compared without query and fragment, after the
normalization below (scheme and host lower case, default port dropped).

``Handshake-DPoP-Htu`` is honoured only with ``Handshake-DPoP-Htu-Tag``, an
HMAC of that URI and the proof under the key gateways and execute workers
share (:class:`GatewayKey`): only a gateway can name the URI a proof was
received on. Server nonces (:class:`NonceIssuer`) are made by gateways and
checked by them (so a client learns the nonce without losing its token) and,
with the same key, by execute workers (so no one skips them over NATS).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from mcp_handshake.services.core.secretfile import read_secret

__all__ = [
    "DPOP_HEADER",
    "DPOP_HTU_HEADER",
    "DPOP_HTU_TAG_HEADER",
    "DPOP_TYP",
    "EXECUTE_BATCH_PATH",
    "EXECUTE_METHOD",
    "EXECUTE_PATH",
    "MCP_PATH",
    "NONCE_TTL_S",
    "PRIVATE_JWK_MEMBERS",
    "GatewayKey",
    "NonceIssuer",
    "access_token_hash",
    "bearer_token",
    "is_public_jwk",
    "normalize_htu",
]

#: The proof, as RFC 9449 names its header (over HTTP and over NATS alike).
DPOP_HEADER = "DPoP"
#: Over NATS: the URI the gateway received the proof on (``htu`` must match it).
DPOP_HTU_HEADER = "Handshake-DPoP-Htu"
#: Over NATS: the gateway's HMAC over that URI and the proof (:class:`GatewayKey`).
DPOP_HTU_TAG_HEADER = "Handshake-DPoP-Htu-Tag"
DPOP_TYP = "dpop+jwt"
EXECUTE_METHOD = "POST"
EXECUTE_PATH = "/v1/execute"
#: The gateway's execute batch: a DPoP proof for it proves the whole HTTP request.
EXECUTE_BATCH_PATH = "/v1/execute/batch"
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


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class GatewayKey:
    """The key gateways and execute workers share: the tag that makes a forwarded
    ``htu`` the gateway's word (an HMAC-SHA256 over the URI and the proof)."""

    def __init__(self, key: bytes) -> None:
        if len(key) < 32:
            raise ValueError("the gateway key needs at least 32 bytes")
        self._key = key

    @classmethod
    def from_file(cls, path: Path) -> GatewayKey:
        return cls(read_secret(path, "gateway key", group_read=True))

    def tag(self, htu: str, proof: str) -> str:
        data = b"handshake-dpop-htu\0" + htu.encode() + b"\0" + proof.encode()
        return _b64(hmac.new(self._key, data, hashlib.sha256).digest())

    def valid(self, htu: str, proof: str, tag: str | None) -> bool:
        return tag is not None and hmac.compare_digest(tag, self.tag(htu, proof))


#: How long a server nonce is accepted after it was issued.
NONCE_TTL_S = 300


class NonceIssuer:
    """DPoP server nonces (RFC 9449 section 8), stateless across replicas.

    A nonce is ``<issued at>.<tag>``: the time it was issued (whole seconds) and an
    HMAC-SHA256 of it under a key every gateway and execute worker shares.
    """

    def __init__(self, key: bytes, ttl_s: float = NONCE_TTL_S) -> None:
        if len(key) < 32:
            raise ValueError("the DPoP nonce key needs at least 32 bytes")
        self._key = key
        self._ttl = ttl_s

    @classmethod
    def from_file(cls, path: Path) -> NonceIssuer:
        return cls(read_secret(path, "DPoP nonce key", group_read=True))

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
