"""Session JWT verification.

Everything about parsing and verifying JWTs is PyJWT's; this module only
chooses what to accept: a configured issuer, audience and key set, an
algorithm allow-list (never ``none`` or HMAC), required claims, bounded
leeway, and a size cap checked before any parsing.
"""

from __future__ import annotations

import json
import logging
import time
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import aiohttp
import jwt

from mcp_handshake.services.core.config import SessionConfig
from mcp_handshake.services.core.policy import Caller
from mcp_handshake.shared.errors import Unauthenticated

__all__ = ["SessionVerifier", "bearer_token"]

log = logging.getLogger(__name__)

_REQUIRED = ["exp", "iat", "sub", "iss", "aud"]
_NEVER = {"none", "HS256", "HS384", "HS512"}


def bearer_token(header: str | None) -> str:
    """The JWT of an ``Authorization: Bearer <jwt>`` header."""
    if not header:
        raise Unauthenticated("session token missing")
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthenticated("Authorization must be 'Bearer <session token>'")
    return token.strip()


def _as_set(value: Any) -> frozenset[str]:
    if isinstance(value, str):
        return frozenset(value.split())
    if isinstance(value, list | tuple):
        return frozenset(v for v in value if isinstance(v, str))
    return frozenset()


class SessionVerifier:
    """Verifies session JWTs against the configured key set; CPU only, no I/O."""

    def __init__(
        self, cfg: SessionConfig, jwks: Mapping[str, Any], cache_size: int = 10_000
    ) -> None:
        self._cfg = cfg
        self._algorithms = [a for a in cfg.algorithms if a not in _NEVER]
        self._keys: dict[str | None, jwt.PyJWK] = {}
        self._cache: OrderedDict[str, tuple[Caller, float, float]] = OrderedDict()
        self._cache_size = cache_size
        self.load_jwks(jwks)

    @classmethod
    async def create(cls, cfg: SessionConfig, base: Path) -> SessionVerifier:
        """Load the key set from the configured file or URL (fetched without blocking)."""
        if cfg.jwks_file is not None:
            path = Path(cfg.jwks_file)
            path = path if path.is_absolute() else base / path
            return cls(cfg, json.loads(path.read_text()))
        assert cfg.jwks_url is not None
        timeout = aiohttp.ClientTimeout(total=5.0)
        async with (
            aiohttp.ClientSession(timeout=timeout) as client,
            client.get(cfg.jwks_url, raise_for_status=True) as resp,
        ):
            return cls(cfg, await resp.json())

    def load_jwks(self, jwks: Mapping[str, Any]) -> None:
        keys: dict[str | None, jwt.PyJWK] = {}
        for data in jwks.get("keys", []):
            if data.get("use", "sig") != "sig":
                continue
            try:
                key = jwt.PyJWK(data)
            except jwt.PyJWTError:
                log.warning("skipping an unusable key in the session key set")
                continue
            keys[data.get("kid")] = key
        if not keys:
            raise ValueError("session key set holds no usable signing key")
        self._keys = keys
        self._cache.clear()  # a removed key must stop vouching for its tokens at once

    def verify(self, authorization: str | None) -> Caller:
        """The caller behind an ``Authorization`` header, or ``Unauthenticated``.

        A token whose signature and claims verified once is remembered (bounded
        LRU) until it expires: agents send the same session on every request,
        and the signature check is the costliest step. Time-based claims are
        checked again on every use.
        """
        token = bearer_token(authorization)
        if len(token) > self._cfg.max_token_bytes:
            raise Unauthenticated("session token too large")
        hit = self._cache.get(token)
        if hit is not None:
            caller, exp, nbf = hit
            now = time.time()
            if now > exp + self._cfg.leeway_s:
                del self._cache[token]
                raise Unauthenticated("session token expired")
            if now < nbf - self._cfg.leeway_s:
                raise Unauthenticated("session token not yet valid")
            self._cache.move_to_end(token)
            return caller
        caller, claims = self._verify_signed(token)
        exp = claims["exp"]
        nbf = claims.get("nbf", 0)
        if isinstance(exp, int | float) and isinstance(nbf, int | float):
            self._cache[token] = (caller, float(exp), float(nbf))
            if len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return caller

    def _verify_signed(self, token: str) -> tuple[Caller, dict[str, Any]]:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise Unauthenticated("session token malformed") from None
        alg = header.get("alg")
        if alg not in self._algorithms:
            raise Unauthenticated("session token algorithm not accepted")
        kid = header.get("kid")
        key = self._keys.get(kid)
        if key is None and kid is None and len(self._keys) == 1:
            key = next(iter(self._keys.values()))
        if key is None:
            raise Unauthenticated("session token signed by an unknown key")
        if key.algorithm_name != alg:
            raise Unauthenticated("session token algorithm does not match its key")
        try:
            claims = jwt.decode(
                token,
                key.key,
                algorithms=[alg],
                audience=[self._cfg.audience, *self._cfg.resources],
                issuer=self._cfg.issuer,
                leeway=self._cfg.leeway_s,
                options={"require": _REQUIRED},
            )
        except jwt.ExpiredSignatureError:
            raise Unauthenticated("session token expired") from None
        except jwt.ImmatureSignatureError:
            raise Unauthenticated("session token not yet valid") from None
        except jwt.PyJWTError:
            raise Unauthenticated("session token invalid") from None
        sub = claims.get("sub")
        if not isinstance(sub, str) or not sub or len(sub) > 256:
            raise Unauthenticated("session token has no usable subject")
        cnf = claims.get("cnf")
        jkt = cnf.get("jkt") if isinstance(cnf, dict) else None
        caller = Caller(
            sub=sub,
            roles=_as_set(claims.get(self._cfg.roles_claim)),
            scopes=_as_set(claims.get(self._cfg.scopes_claim)) | _as_set(claims.get("scp")),
            jkt=jkt if isinstance(jkt, str) else None,
            groups=_as_set(claims.get(self._cfg.groups_claim)),
        )
        return caller, claims
