"""Target API clients: base URL, credentials, timeouts, retries, TLS.

Retries (tenacity): a call that never reached the target is always retried;
a timeout, 5xx or 429 only for an operation safe to repeat (an idempotent
method, or a POST whose target de-duplicates by ``Idempotency-Key``), with
exponential backoff and full jitter, or after the target's ``Retry-After``
when it gave one no longer than ``retry_after_max_s``.

Credentials are read here, by executors only, from a file or an environment
variable named in the configuration. They never leave this module: not in
logs, not in errors, not in replies.

The HTTP client is aiohttp: measured on the demo target, it costs about a
tenth of the CPU per call that httpx does (see docs/decisions.md), and the
executor hop is on every handshake's hot path.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import os
import ssl
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import msgspec
import tenacity
from opentelemetry.trace import SpanKind

from mcp_handshake.services.core.config import HandshakeConfig, TargetAuth, TargetConfig
from mcp_handshake.services.core.tools import HttpOperation
from mcp_handshake.shared import tracing
from mcp_handshake.shared.errors import OutcomeUnknown, TargetError, Unavailable

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


class _OAuth2:
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


class OperationContext:
    """Given to Python-function operations: the target's authenticated client and the txn."""

    def __init__(self, target: TargetClient, txn: str) -> None:
        self.target = target
        self.txn = txn

    async def request(self, method: str, path: str, **kw: Any) -> Any:
        """An authenticated call to the target; returns the decoded JSON answer."""
        return await self.target.request(method, path, self.txn, **kw)


def _ssl_context(cfg: TargetConfig, base: Path) -> ssl.SSLContext | None:
    if not (cfg.ca_file or cfg.client_cert):
        return None
    ctx = ssl.create_default_context(cafile=str(base / cfg.ca_file) if cfg.ca_file else None)
    if cfg.client_cert:
        ctx.load_cert_chain(
            str(base / cfg.client_cert), str(base / (cfg.client_key or cfg.client_cert))
        )
    return ctx


def _query_value(v: Any) -> str:
    return ("true" if v else "false") if isinstance(v, bool) else str(v)


class TargetClient:
    def __init__(self, name: str, cfg: TargetConfig, base: Path) -> None:
        self.name = name
        self._cfg = cfg
        self._base_url = cfg.base_url.rstrip("/")
        self._headers: dict[str, str] = {}
        self._oauth: _OAuth2 | None = None
        kind = cfg.auth.type
        if kind == "api_key":
            self._headers[cfg.auth.header] = read_secret(cfg.auth, base)
        elif kind == "bearer":
            self._headers["Authorization"] = f"Bearer {read_secret(cfg.auth, base)}"
        elif kind == "oauth2_client_credentials":
            self._oauth = _OAuth2(cfg.auth, read_secret(cfg.auth, base))
        self._ssl = _ssl_context(cfg, base)
        self._timeout = aiohttp.ClientTimeout(
            total=cfg.timeout_s, sock_connect=cfg.connect_timeout_s
        )
        self._session: aiohttp.ClientSession | None = None
        self._backoff = tenacity.wait_random_exponential(
            multiplier=cfg.backoff_s, max=cfg.backoff_max_s
        )

    @classmethod
    def all_from(cls, config: HandshakeConfig, names: list[str]) -> dict[str, TargetClient]:
        out = {}
        for name in names:
            if name not in config.targets:
                raise ValueError(f"no target {name!r} in {config.path}")
            out[name] = cls(name, config.targets[name], config.path.parent)
        return out

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                headers=self._headers,
                timeout=self._timeout,
                connector=aiohttp.TCPConnector(limit=256, ssl=self._ssl or True),
                raise_for_status=False,
            )
        return self._session

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def call(self, op: HttpOperation, params: Mapping[str, Any], txn: str) -> Any:
        path = op.path.format_map({k: quote(str(v), safe="") for k, v in params.items()})
        query = {k: _query_value(params[k]) for k in op.query if params.get(k) is not None}
        body = {k: params[k] for k in op.body if params.get(k) is not None} if op.body else None
        cfg, repeatable = self._cfg, op.repeatable

        def worth_retrying(exc: BaseException) -> bool:
            # Nothing reached the target: always safe. Otherwise only an operation safe to
            # repeat under the same Idempotency-Key, and never past a long Retry-After.
            if not isinstance(exc, _Retryable) or (exc.sent and not repeatable):
                return False
            return exc.retry_after is None or exc.retry_after <= cfg.retry_after_max_s

        retrying = tenacity.AsyncRetrying(
            stop=tenacity.stop_after_attempt(1 + cfg.retries),
            wait=self._wait,
            retry=tenacity.retry_if_exception(worth_retrying),
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    return await self._request(op.method, path, txn, params=query, json=body)
        except _Retryable as exc:
            raise exc.error from None
        raise AssertionError("unreachable")

    def _wait(self, state: tenacity.RetryCallState) -> float:
        """The target's Retry-After when it gave one (bounded by the retry test), else
        exponential backoff with full jitter."""
        exc = state.outcome.exception() if state.outcome is not None else None
        if isinstance(exc, _Retryable) and exc.retry_after is not None:
            return exc.retry_after
        return float(self._backoff(state))

    async def request(self, method: str, path: str, txn: str, **kw: Any) -> Any:
        """One authenticated call (no retries); the decoded JSON answer or a protocol error."""
        try:
            return await self._request(method, path, txn, **kw)
        except _Retryable as exc:
            raise exc.error from None

    async def _request(self, method: str, path: str, txn: str, **kw: Any) -> Any:
        session = self._client()
        headers = {"Idempotency-Key": txn}
        if self._oauth is not None:
            headers["Authorization"] = await self._oauth.header(session)
        # The span names the operation, never the URL's query (it holds params).
        attrs = {"http.request.method": method, "url.template": path.split("?")[0],
                 "server.address": self._base_url, "handshake.target": self.name,
                 "handshake.transaction_id": txn}  # fmt: skip
        try:
            with tracing.span(method, SpanKind.CLIENT, attrs) as span:
                async with session.request(
                    method, self._base_url + path, headers=tracing.inject(headers),
                    allow_redirects=False, **kw,
                ) as resp:  # fmt: skip
                    data = await resp.read()
                    status = resp.status
                    retry_after = _retry_after(resp.headers.get("Retry-After"))
                    if span is not None:
                        span.set_attribute("http.response.status_code", status)
                if status >= 500 or status == 429:
                    refused = TargetError(_target_message(status, data), transaction_id=txn)
                    raise _Retryable(refused, retry_after=retry_after)
                return _result(status, data, txn)
        except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError):
            # Nothing reached the target: safe to retry, and safe to say so.
            err = Unavailable(
                "the target API is unreachable; nothing was executed", transaction_id=txn
            )
            raise _Retryable(err, sent=False) from None
        except (TimeoutError, aiohttp.ClientError):
            raise _Retryable(OutcomeUnknown(transaction_id=txn)) from None


class _Retryable(Exception):
    """A failure a call safe to repeat may retry; ``sent`` tells whether the target saw
    it, ``retry_after`` when the target asked to be called again (seconds)."""

    def __init__(
        self, error: Exception, sent: bool = True, retry_after: float | None = None
    ) -> None:
        self.error = error
        self.sent = sent
        self.retry_after = retry_after


def _retry_after(value: str | None) -> float | None:
    """RFC 9110 ``Retry-After``: delay seconds or an HTTP date; ``None`` if absent or bad."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - time.time())


def _result(status: int, data: bytes, txn: str) -> Any:
    if status >= 400:
        raise TargetError(_target_message(status, data), transaction_id=txn)
    if not data:
        return None
    try:
        return msgspec.json.decode(data)
    except msgspec.DecodeError:
        raise TargetError("the target API answered with something that is not JSON") from None


def _target_message(status: int, data: bytes) -> str:
    """The target's status and, if it gave one, its short error code. Nothing else."""
    code = None
    try:
        body = msgspec.json.decode(data)
        err = body.get("error") if isinstance(body, dict) else None
        candidate = err.get("code") if isinstance(err, dict) else err
        if isinstance(candidate, str) and candidate.isidentifier() and len(candidate) <= 40:
            code = candidate
    except msgspec.DecodeError:
        pass
    suffix = f" ({code})" if code else ""
    return f"the target API refused the operation: HTTP {status}{suffix}"
