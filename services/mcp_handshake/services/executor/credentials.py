"""A target's credentials, read by executors only, from a file or an environment variable.

They never leave this module's objects: not in logs, not in errors, not in replies.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import aiohttp

from mcp_handshake.services.core.config import TargetAuth
from mcp_handshake.shared.errors import TargetError

__all__ = ["Credentials", "OAuth2", "read_secret"]


def read_secret(auth: TargetAuth, base: Path) -> str:
    if auth.secret_file:
        path = Path(auth.secret_file)
        path = path if path.is_absolute() else base / path
        return path.read_text().strip()
    if auth.secret_env:
        value = os.environ.get(auth.secret_env)
        if value:
            return value.strip()
    raise ValueError("target credentials are not configured (secret_file or secret_env)")


class OAuth2:
    """OAuth2 client credentials, the access token cached until shortly before expiry."""

    def __init__(self, auth: TargetAuth, secret: str) -> None:
        if not auth.token_url or not auth.client_id:
            raise ValueError("oauth2_client_credentials needs token_url and client_id")
        self._auth = auth
        self._secret = secret
        self._token: str | None = None
        self._expires = 0.0
        self._lock = asyncio.Lock()

    async def header(self, session: aiohttp.ClientSession) -> str:
        if self._token and time.monotonic() < self._expires:
            return f"Bearer {self._token}"
        async with self._lock:
            if not (self._token and time.monotonic() < self._expires):
                data = {"grant_type": "client_credentials"}
                if self._auth.scope:
                    data["scope"] = self._auth.scope
                basic = aiohttp.encode_basic_auth(self._auth.client_id or "", self._secret)
                headers = {"Authorization": basic}
                async with session.post(
                    self._auth.token_url or "", data=data, headers=headers
                ) as r:
                    if r.status != 200:
                        raise TargetError("the target's token endpoint refused the credentials")
                    body = await r.json()
                self._token = str(body["access_token"])
                self._expires = time.monotonic() + float(body.get("expires_in", 300)) - 30
        return f"Bearer {self._token}"


class Credentials:
    """How one target is authenticated: fixed headers (API key, basic, bearer, cookie),
    a query param (API key), or an OAuth2 client-credentials token fetched on demand."""

    def __init__(self, auth: TargetAuth, base: Path) -> None:
        self.headers: dict[str, str] = {}
        self.query: dict[str, str] = {}
        self.oauth: OAuth2 | None = None
        kind = auth.type
        if kind == "none":
            return
        secret = read_secret(auth, base)
        if kind == "api_key" and auth.location == "header":
            self.headers[auth.header] = secret
        elif kind == "api_key" and auth.location == "query":
            self.query[auth.header] = secret
        elif kind == "api_key":
            self.headers["Cookie"] = f"{auth.header}={secret}"
        elif kind == "basic":
            if not auth.username:
                raise ValueError("basic auth needs a username")
            self.headers["Authorization"] = aiohttp.encode_basic_auth(auth.username, secret)
        elif kind == "bearer":
            self.headers["Authorization"] = f"Bearer {secret}"
        else:
            self.oauth = OAuth2(auth, secret)
