"""Webhook notifications: an approval is requested from humans, decided, or expired.

Each delivery is a POST whose body is signed with HMAC-SHA256 under a shared
secret, over ``<timestamp>.<body>``: headers ``Handshake-Timestamp`` (Unix
seconds) and ``Handshake-Signature: v1=<hex>``. A receiver recomputes the
signature with ``hmac.compare_digest`` and refuses stale timestamps. Failed
deliveries are retried with exponential backoff and full jitter, off the
request path; a delivery that never succeeds is logged, and nothing waits on it.
The secret (at least 32 bytes, in a file readable by its owner only) is checked
at start: a worker with a weak one does not start.
The body names the transaction, tool, requester and preview hash: never a
token or a session.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import random
import time
from pathlib import Path
from typing import Any

import aiohttp
import msgspec

from mcp_handshake.services.core.config import WebhookConfig
from mcp_handshake.services.core.secretfile import read_secret
from mcp_handshake.services.store import TxRecord

__all__ = ["Notifier", "signature"]

log = logging.getLogger(__name__)

_BACKOFF_S, _BACKOFF_CAP_S = 0.5, 30.0


def signature(secret: bytes, timestamp: str, body: bytes) -> str:
    """The ``Handshake-Signature`` value of a body sent at ``timestamp``."""
    mac = hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256)
    return "v1=" + mac.hexdigest()


class Notifier:
    def __init__(self, config: WebhookConfig, secret_file: Path) -> None:
        """``ValueError`` when the secret is under 32 bytes or its file open to others."""
        self._config = config
        self._secret = read_secret(secret_file, "webhook secret")
        self._tasks: set[asyncio.Task[None]] = set()
        self._session: aiohttp.ClientSession | None = None
        self.delivered = 0
        self.failed = 0

    def notify(self, event: str, record: TxRecord, **extra: Any) -> None:
        """Deliver in the background: ``requested``, ``decided`` or ``expired``."""
        body = self._body(event, record, extra)
        task = asyncio.get_running_loop().create_task(self._deliver(body, record.txn))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _body(self, event: str, rec: TxRecord, extra: dict[str, Any]) -> bytes:
        fields = {"event": f"approval.{event}", "at": time.time(), "transaction_id": rec.txn,
                  "tool": rec.tool, "tier": rec.tier, "requester": rec.sub,
                  "preview_hash": rec.preview_hash, "expires_at": rec.expires_at,
                  "escalated": rec.escalated, **extra}  # fmt: skip
        if self._config.format == "slack":
            what = {"requested": "waits for approval", "decided": "was decided",
                    "expired": "expired unapproved"}[event]  # fmt: skip
            status = f" ({extra['status']})" if extra.get("status") else ""
            text = f"{rec.tool} requested by {rec.sub} {what}{status}: transaction {rec.txn}"
            return msgspec.json.encode({"text": text, "handshake": fields})
        return msgspec.json.encode(fields)

    async def _deliver(self, body: bytes, txn: str) -> None:
        for attempt in range(self._config.retries + 1):
            if attempt:
                delay = min(_BACKOFF_CAP_S, _BACKOFF_S * 2**attempt)
                await asyncio.sleep(random.uniform(0, delay))  # noqa: S311 - jitter, not a secret
            if await self._post(body):
                self.delivered += 1
                return
        self.failed += 1
        log.error("approval webhook not delivered", extra={"txn": txn})

    async def _post(self, body: bytes) -> bool:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self._config.timeout_s)
            )
        timestamp = str(int(time.time()))
        headers = {"Content-Type": "application/json", "Handshake-Timestamp": timestamp,
                   "Handshake-Signature": signature(self._secret, timestamp, body)}  # fmt: skip
        try:
            async with self._session.post(self._config.url, data=body, headers=headers) as resp:
                return 200 <= resp.status < 300
        except (aiohttp.ClientError, TimeoutError):
            return False

    async def aclose(self, timeout: float = 5.0) -> None:
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=timeout)
        if self._session is not None:
            await self._session.close()
