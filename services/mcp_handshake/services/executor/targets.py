"""Target API clients: base URL, credentials, timeouts, retries, TLS.

Credentials are read here, by executors only, from a file or an environment
variable named in the configuration. They never leave this module: not in
logs, not in errors, not in replies.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

from mcp_handshake.shared.errors import OutcomeUnknown, TargetError, Unavailable

from ..config import HandshakeConfig, TargetAuth, TargetConfig
from ..tools import HttpOperation

__all__ = ["OperationContext", "TargetClient", "read_secret"]

log = logging.getLogger(__name__)


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


class _OAuth2(httpx.Auth):
    """OAuth2 client credentials, with the access token cached until shortly before expiry."""

    requires_response_body = True

    def __init__(self, auth: TargetAuth, secret: str) -> None:
        if not auth.token_url or not auth.client_id:
            raise ValueError("oauth2_client_credentials needs token_url and client_id")
        self._auth = auth
        self._secret = secret
        self._token: str | None = None
        self._expires = 0.0
        self._lock = asyncio.Lock()

    async def _fetch(self) -> str:
        async with self._lock:
            if self._token and time.monotonic() < self._expires:
                return self._token
            data = {"grant_type": "client_credentials"}
            if self._auth.scope:
                data["scope"] = self._auth.scope
            async with httpx.AsyncClient(timeout=10.0) as client:
                resp = await client.post(
                    self._auth.token_url or "",
                    data=data,
                    auth=(self._auth.client_id or "", self._secret),
                )
            if resp.status_code != 200:
                raise TargetError("the target's token endpoint refused the client credentials")
            body = resp.json()
            self._token = str(body["access_token"])
            self._expires = time.monotonic() + float(body.get("expires_in", 300)) - 30
            return self._token

    async def async_auth_flow(self, request: httpx.Request) -> Any:
        request.headers["Authorization"] = f"Bearer {await self._fetch()}"
        yield request


class OperationContext:
    """Given to Python-function operations: the authenticated client and the transaction."""

    def __init__(self, client: httpx.AsyncClient, txn: str) -> None:
        self.client = client
        self.txn = txn


class TargetClient:
    def __init__(self, name: str, cfg: TargetConfig, base: Path) -> None:
        self.name = name
        self._cfg = cfg
        headers: dict[str, str] = {}
        auth: httpx.Auth | None = None
        kind = cfg.auth.type
        if kind == "api_key":
            headers[cfg.auth.header] = read_secret(cfg.auth, base)
        elif kind == "bearer":
            headers["Authorization"] = f"Bearer {read_secret(cfg.auth, base)}"
        elif kind == "oauth2_client_credentials":
            auth = _OAuth2(cfg.auth, read_secret(cfg.auth, base))
        verify: Any = True
        if cfg.ca_file:
            verify = str(base / cfg.ca_file)
        cert = None
        if cfg.client_cert:
            cert = (str(base / cfg.client_cert), str(base / (cfg.client_key or cfg.client_cert)))
        self.client = httpx.AsyncClient(
            base_url=cfg.base_url,
            headers=headers,
            auth=auth,
            verify=verify,
            cert=cert,
            timeout=httpx.Timeout(cfg.timeout_s, connect=cfg.connect_timeout_s),
            limits=httpx.Limits(max_connections=256, max_keepalive_connections=256),
            follow_redirects=False,
        )

    @classmethod
    def all_from(cls, config: HandshakeConfig, names: list[str]) -> dict[str, TargetClient]:
        out = {}
        for name in names:
            if name not in config.targets:
                raise ValueError(f"no target {name!r} in {config.path}")
            out[name] = cls(name, config.targets[name], config.path.parent)
        return out

    async def aclose(self) -> None:
        await self.client.aclose()

    async def call(self, op: HttpOperation, params: Mapping[str, Any], txn: str) -> Any:
        path = op.path.format_map({k: quote(str(v), safe="") for k, v in params.items()})
        query = {k: params[k] for k in op.query if params.get(k) is not None}
        body = {k: params[k] for k in op.body if params.get(k) is not None} if op.body else None
        attempts = 1 + (self._cfg.retries if op.idempotent else 0)
        for attempt in range(attempts):
            try:
                resp = await self.client.request(
                    op.method,
                    path,
                    params=query,
                    json=body,
                    headers={"Idempotency-Key": txn},
                )
            except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout):
                # Nothing reached the target: safe to retry, and safe to say so.
                if attempt + 1 < attempts:
                    continue
                raise Unavailable(
                    "the target API is unreachable; nothing was executed", transaction_id=txn
                ) from None
            except httpx.TimeoutException:
                if op.idempotent and attempt + 1 < attempts:
                    continue
                raise OutcomeUnknown(transaction_id=txn) from None
            except httpx.HTTPError:
                raise OutcomeUnknown(transaction_id=txn) from None
            if resp.status_code >= 500 and op.idempotent and attempt + 1 < attempts:
                continue
            return _result(resp, txn)
        raise AssertionError("unreachable")


def _result(resp: httpx.Response, txn: str) -> Any:
    if resp.status_code >= 400:
        raise TargetError(_target_message(resp), transaction_id=txn)
    if not resp.content:
        return None
    try:
        return resp.json()
    except ValueError:
        raise TargetError("the target API answered with something that is not JSON") from None


def _target_message(resp: httpx.Response) -> str:
    """The target's status and, if it gave one, its short error code. Nothing else."""
    code = None
    try:
        body = resp.json()
        err = body.get("error") if isinstance(body, dict) else None
        candidate = err.get("code") if isinstance(err, dict) else err
        if isinstance(candidate, str) and candidate.isidentifier() and len(candidate) <= 40:
            code = candidate
    except ValueError:
        pass
    suffix = f" ({code})" if code else ""
    return f"the target API refused the operation: HTTP {resp.status_code}{suffix}"
