"""OIDC sign-in: authorization code flow with PKCE (S256), by Authlib.

The flow's state, PKCE verifier and nonce stay in this process, keyed by the
``state``; the browser holds only the signed ``state`` in a short-lived login
cookie. That cookie is ``SameSite=Lax`` (the identity provider's redirect
back is a cross-site navigation, which a ``Strict`` cookie would not follow)
and carries no authority: the callback needs it, the matching ``state`` and a
code the provider issued for this verifier. The ID token is verified with
PyJWT against the provider's published keys (issuer, audience, expiry, nonce).
"""

from __future__ import annotations

import hmac
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import httpx
import jwt
from authlib.common.security import generate_token
from authlib.integrations.httpx_client import AsyncOAuth2Client
from itsdangerous import BadSignature, URLSafeTimedSerializer

from mcp_handshake.services.console.settings import ConsoleSettings

__all__ = ["LoginFailed", "OidcLogin", "SignedIn"]

FLOW_TTL_S = 600
LOGIN_COOKIE = "hs_console_login"
_ID_TOKEN_ALGS = ["RS256", "ES256", "EdDSA", "PS256"]


class LoginFailed(Exception):
    """The sign-in could not be completed (the message says why; no secret in it)."""


@dataclass(frozen=True)
class SignedIn:
    sub: str
    claims: dict[str, Any]
    #: The token forwarded to the mediator as the user's session.
    session_token: str


@dataclass(frozen=True)
class _Flow:
    verifier: str
    nonce: str
    started: float


class OidcLogin:
    def __init__(self, cs: ConsoleSettings, secret: str) -> None:
        assert cs.oidc_issuer and cs.oidc_client_id
        self.cs = cs
        self.issuer = cs.oidc_issuer.rstrip("/")
        self.redirect_uri = f"{cs.base_url}/login/callback"
        self._secret = (cs.oidc_client_secret_file.read_text().strip()
                        if cs.oidc_client_secret_file else None)  # fmt: skip
        self._cookie = URLSafeTimedSerializer(secret, salt="mcp-handshake-console-login")
        self._flows: OrderedDict[str, _Flow] = OrderedDict()
        self._metadata: dict[str, Any] | None = None

    def _client(self) -> AsyncOAuth2Client:
        return AsyncOAuth2Client(
            self.cs.oidc_client_id, self._secret, scope=self.cs.oidc_scopes,
            redirect_uri=self.redirect_uri, code_challenge_method="S256", timeout=10.0,
            token_endpoint_auth_method="client_secret_basic" if self._secret else "none",
        )  # fmt: skip

    async def metadata(self) -> dict[str, Any]:
        if self._metadata is None:
            url = f"{self.issuer}/.well-known/openid-configuration"
            try:
                async with httpx.AsyncClient(timeout=10.0) as http:
                    resp = await http.get(url)
                    resp.raise_for_status()
                    data: dict[str, Any] = resp.json()
            except (httpx.HTTPError, ValueError):
                raise LoginFailed("the identity provider is unavailable") from None
            if data.get("issuer", "").rstrip("/") != self.issuer:
                raise LoginFailed("the identity provider's metadata names another issuer")
            self._metadata = data
        return self._metadata

    async def start(self) -> tuple[str, str]:
        """The provider's authorization URL, and the login cookie's value."""
        meta = await self.metadata()
        verifier, nonce = generate_token(64), generate_token(32)
        url, state = self._client().create_authorization_url(
            meta["authorization_endpoint"], code_verifier=verifier, nonce=nonce
        )
        now = time.time()
        while self._flows and (
            len(self._flows) > 10_000 or next(iter(self._flows.values())).started < now - FLOW_TTL_S
        ):
            self._flows.popitem(last=False)  # fmt: skip
        self._flows[state] = _Flow(verifier, nonce, now)
        return url, self._cookie.dumps(state)

    async def finish(self, params: dict[str, str], cookie: str | None) -> SignedIn:
        """Check the callback's state against the login cookie, redeem the code with the
        PKCE verifier, verify the ID token."""
        if "error" in params:
            raise LoginFailed("the identity provider refused the sign-in")
        state, code = params.get("state", ""), params.get("code", "")
        try:
            expected = str(self._cookie.loads(cookie or "", max_age=FLOW_TTL_S))
        except BadSignature:
            raise LoginFailed("no sign-in in progress in this browser") from None
        if not state or not hmac.compare_digest(state.encode(), expected.encode()):
            raise LoginFailed("the sign-in state does not match")
        flow = self._flows.pop(state, None)
        if flow is None or flow.started < time.time() - FLOW_TTL_S or not code:
            raise LoginFailed("the sign-in expired or was already used")
        meta = await self.metadata()
        try:
            token = await self._client().fetch_token(
                meta["token_endpoint"], code=code, code_verifier=flow.verifier
            )
        except Exception:
            raise LoginFailed("the identity provider did not redeem the code") from None
        claims = await self._verify_id_token(str(token.get("id_token") or ""), flow.nonce)
        forwarded = str(token.get(self.cs.oidc_session_token) or "")
        if not forwarded:
            raise LoginFailed(f"the identity provider returned no {self.cs.oidc_session_token}")
        return SignedIn(str(claims["sub"]), claims, forwarded)

    async def _verify_id_token(self, id_token: str, nonce: str) -> dict[str, Any]:
        meta = await self.metadata()
        try:
            async with httpx.AsyncClient(timeout=10.0) as http:
                resp = await http.get(meta["jwks_uri"])
                resp.raise_for_status()
                keys = jwt.PyJWKSet.from_dict(resp.json())
            kid = jwt.get_unverified_header(id_token).get("kid")
            key = next(k for k in keys.keys if kid is None or k.key_id == kid)
            claims: dict[str, Any] = jwt.decode(
                id_token, key.key, algorithms=_ID_TOKEN_ALGS, audience=self.cs.oidc_client_id,
                issuer=meta["issuer"], leeway=30, options={"require": ["exp", "iat", "sub"]},
            )  # fmt: skip
        except (httpx.HTTPError, ValueError, StopIteration, jwt.PyJWTError):
            raise LoginFailed("the ID token does not verify") from None
        if not hmac.compare_digest(str(claims.get("nonce", "")).encode(), nonce.encode()):
            raise LoginFailed("the ID token is for another sign-in (nonce)")
        return claims
