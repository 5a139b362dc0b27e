"""Transactions left ``outcome_unknown``: what reconciling them needs from Redis.

When a dispatch's outcome is unknown, the record keeps the params that were
dispatched (it lives ``RETENTION_S`` after use). A reconcile run takes a lease
on the record (one run at a time, at most ``MAX_RUNS``, only by the
transaction's subject) and settles it: ``executed``, ``failed``, or back to
``outcome_unknown`` for another try.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import msgspec

from mcp_handshake.shared.errors import InvalidTransaction, Unavailable, ValidationFailed
from mcp_handshake.shared.subjects import Keys

from .records import TxRecord, from_hash
from .redis import StoreError
from .scripts import Arg, Scripts
from .tokens import JTI_TTL_S

__all__ = ["MAX_RUNS", "ReconcileStore"]

log = logging.getLogger(__name__)

#: Reconcile runs allowed per transaction (each one under the same Idempotency-Key).
MAX_RUNS = 3


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class ReconcileStore:
    def __init__(self, scripts: Scripts) -> None:
        self._scripts = scripts
        self._redis = scripts.redis

    async def unknown(self, token_hash: str, params: dict[str, Any]) -> None:
        """Mark a transaction ``outcome_unknown``, keeping the params that were dispatched."""
        try:
            encoded = msgspec.json.encode(params)
            await self._scripts.call("unknown", [Keys.tx(token_hash)], [encoded])
        except StoreError:
            log.warning("could not record an unknown outcome")

    async def take(
        self, token_hash: str, sub: str, txn: str, lease_s: float
    ) -> tuple[int, TxRecord]:
        """The run number and the record, or ``invalid_transaction`` (unknown id, another
        subject, not ``outcome_unknown``, a run in progress, or no runs left)."""
        args: list[Arg] = [sub, repr(time.time()), repr(lease_s), MAX_RUNS]
        try:
            res: Any = await self._scripts.call("reconcile", [Keys.tx(token_hash)], args)
        except StoreError:
            raise Unavailable("token store unavailable; nothing was executed") from None
        outcome = _text(res[0])
        if outcome == "ok":
            return int(res[1]), from_hash(res[2])
        message = {
            "status": "only a transaction whose outcome is unknown can be reconciled",
            "busy": "a reconcile of this transaction is in progress",
            "exhausted": "this transaction was reconciled too many times",
        }.get(outcome)
        raise InvalidTransaction(message, transaction_id=txn)

    async def settle(self, token_hash: str, status: str) -> None:
        try:
            await self._scripts.call("settle", [Keys.tx(token_hash)], [status])
        except StoreError:
            log.warning("could not record a reconciled status")

    async def claim_jti(self, thumbprint: str, jti: str, txn: str) -> None:
        """A proof's ``jti`` is single use, here as at execute."""
        try:
            fresh = await self._redis.set(Keys.jti(thumbprint, jti), b"1", nx=True,
                                          px=JTI_TTL_S * 1000)  # fmt: skip
        except StoreError:
            raise Unavailable("token store unavailable; nothing was executed") from None
        if not fresh:
            raise ValidationFailed("proof jti already used", transaction_id=txn)
