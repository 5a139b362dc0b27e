"""Target API clients: base URL, credentials, timeouts, retries, TLS.

Retries (tenacity): a call that never reached the target is always retried;
a timeout, 5xx or 429 only for an operation safe to repeat (an idempotent
method, or a POST whose target de-duplicates by ``Idempotency-Key``), with
exponential backoff and full jitter, or after the target's ``Retry-After``
when it gave one no longer than ``retry_after_max_s``.

Credentials are read by executors only (``credentials``), from a file or an
environment variable named in the configuration. They never leave the client:
not in logs, not in errors, not in replies.

The HTTP client is aiohttp: measured on the demo target, it costs about a
tenth of the CPU per call that httpx does (see docs/decisions.md), and the
executor hop is on every handshake's hot path.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import tenacity
from opentelemetry.trace import SpanKind

from mcp_handshake.services.core.config import HandshakeConfig, TargetConfig
from mcp_handshake.services.core.tools import HttpOperation
from mcp_handshake.services.executor.credentials import Credentials, read_secret
from mcp_handshake.services.executor.responses import result, target_message
from mcp_handshake.services.executor.responses import retry_after as parse_retry_after
from mcp_handshake.shared import tracing
from mcp_handshake.shared.errors import OutcomeUnknown, TargetError, Unavailable

__all__ = ["OperationContext", "TargetClient", "read_secret"]

log = logging.getLogger(__name__)


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


def _placed(op: HttpOperation, params: Mapping[str, Any]) -> dict[str, Any]:
    """The request's query, headers and body from ``params`` (``None`` values left out)."""

    def part(names: tuple[str, ...]) -> dict[str, Any]:
        return {op.wire.get(k, k): params[k] for k in names if params.get(k) is not None}

    kw: dict[str, Any] = {"params": {k: _query_value(v) for k, v in part(op.query).items()}}
    if op.headers:
        kw["headers"] = {k: _query_value(v) for k, v in part(op.headers).items()}
    if op.body:
        body = part(op.body)
        if op.form:
            kw["data"] = {k: _query_value(v) for k, v in body.items()}
        else:
            kw["json"] = body
    return kw


class TargetClient:
    def __init__(self, name: str, cfg: TargetConfig, base: Path) -> None:
        self.name = name
        self._cfg = cfg
        self._base_url = cfg.base_url.rstrip("/")
        self._creds = Credentials(cfg.auth, base)
        self._ssl = _ssl_context(cfg, base)
        self._timeout = aiohttp.ClientTimeout(
            total=cfg.timeout_s, sock_connect=cfg.connect_timeout_s
        )
        self._session: aiohttp.ClientSession | None = None
        self._backoff = tenacity.wait_random_exponential(
            multiplier=cfg.backoff_s, max=cfg.backoff_max_s
        )

    @property
    def config(self) -> TargetConfig:
        return self._cfg

    async def auth_headers(self) -> dict[str, str]:
        """The headers that authenticate a call (for clients other than this one's)."""
        headers = dict(self._creds.headers)
        if self._creds.oauth is not None:
            headers["Authorization"] = await self._creds.oauth.header(self._client())
        return headers

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
                headers=self._creds.headers,
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
        kw = _placed(op, params)
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
                    return await self._request(op.method, path, txn, **kw)
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

    async def _request(
        self, method: str, path: str, txn: str, headers: Mapping[str, str] | None = None, **kw: Any
    ) -> Any:
        session = self._client()
        headers = {**(headers or {}), "Idempotency-Key": txn}
        if self._creds.oauth is not None:
            headers["Authorization"] = await self._creds.oauth.header(session)
        if self._creds.query:
            kw["params"] = {**kw.get("params", {}), **self._creds.query}
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
                    retry_after = parse_retry_after(resp.headers.get("Retry-After"))
                    if span is not None:
                        span.set_attribute("http.response.status_code", status)
                if status >= 500 or status == 429:
                    refused = TargetError(target_message(status, data), transaction_id=txn)
                    raise _Retryable(refused, retry_after=retry_after)
                return result(status, data, txn)
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
