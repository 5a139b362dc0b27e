"""Pending approvals kept durable in NATS KV, so a Redis that loses everything loses none.

Redis holds the working copy of every transaction; a restricted one waiting
for approval is also written, at authorize, to the JetStream key-value bucket
``HANDSHAKE_PENDING`` (key: the transaction id; value: the token hash and the
record as first stored), and deleted once it is decided. When an approval
worker finds Redis empty (the ``Keys.RESTORED`` marker gone), it writes every
entry that has not expired back. A restored transaction starts over: votes
cast before the loss are not kept (quorum asks again), which errs on the safe
side. The entry holds the params approvers see, at rest in the NATS cluster,
for at most the approval's lifetime; see docs/decisions.md.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator

import msgspec
from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig, StorageType
from nats.js.errors import NotFoundError
from nats.js.kv import KeyValue

from mcp_handshake.shared.errors import Unavailable

from .keys import open_bucket
from .records import TxRecord

__all__ = ["PENDING_BUCKET", "PendingEntry", "PendingLog"]

log = logging.getLogger(__name__)

PENDING_BUCKET = "HANDSHAKE_PENDING"
_STREAM = f"KV_{PENDING_BUCKET}"
_PREFIX = f"$KV.{PENDING_BUCKET}."


class PendingEntry(msgspec.Struct, frozen=True):
    th: str
    record: TxRecord


_decode = msgspec.json.Decoder(PendingEntry)


class PendingLog:
    """The durable copy of pending approvals. ``max_age_s`` bounds how long any entry
    can stay (the longest approval lifetime), should its deletion have been lost."""

    def __init__(self, js: JetStreamContext, max_age_s: float, replicas: int = 1) -> None:
        self._js = js
        self._max_age_s = max_age_s
        self._replicas = replicas
        self._kv: KeyValue | None = None

    @classmethod
    async def opened(cls, js: JetStreamContext, max_age_s: float, replicas: int = 1) -> PendingLog:
        """The log, its bucket created when missing (by authorize or approval workers,
        whichever starts first; an operator may create it first with more replicas)."""
        log_ = cls(js, max_age_s, replicas)
        await log_.open(create=True)
        return log_

    async def open(self, *, create: bool) -> None:
        config = KeyValueConfig(bucket=PENDING_BUCKET, history=1, ttl=self._max_age_s,
                                storage=StorageType.FILE, direct=False,
                                replicas=self._replicas)  # fmt: skip
        self._kv = await open_bucket(self._js, config, create=create)

    @property
    def _bucket(self) -> KeyValue:
        if self._kv is None:
            raise RuntimeError("PendingLog.open() first")
        return self._kv

    async def save(self, th: str, record: TxRecord) -> None:
        try:
            await self._bucket.put(record.txn, msgspec.json.encode(PendingEntry(th, record)))
        except (NatsError, TimeoutError):
            log.warning("pending approvals log unavailable", extra={"txn": record.txn})
            raise Unavailable("approval queue unavailable; nothing was requested") from None

    async def drop(self, txn: str) -> None:
        """Forget a decided transaction (best effort: an entry left behind restores a
        decided transaction as pending only if Redis also lost everything)."""
        try:
            await self._bucket.purge(txn)
        except (NatsError, TimeoutError, ValueError):
            log.warning("could not drop a decided approval from the log", extra={"txn": txn})

    async def entries(self) -> AsyncIterator[PendingEntry]:
        """Every live entry that has not expired, oldest first."""
        seq, now = 1, time.time()
        while True:
            try:
                msg = await self._js.get_msg(_STREAM, seq=seq, subject=_PREFIX + ">", next=True)
            except NotFoundError:
                return
            seq = (msg.seq or seq) + 1
            if msg.headers and msg.headers.get("KV-Operation") in {"DEL", "PURGE"}:
                continue
            try:
                entry = _decode.decode(msg.data or b"")
            except msgspec.DecodeError:
                continue
            if entry.record.expires_at > now and entry.record.status == "pending_approval":
                yield entry
