"""Restricted transactions waiting for approval: the pending index and decisions."""

from __future__ import annotations

import time
from typing import Any, Literal

from mcp_handshake.shared.errors import Unavailable
from mcp_handshake.shared.subjects import Keys

from .records import TxRecord
from .redis import StoreError
from .scripts import Arg, Scripts
from .tokens import RETENTION_S, TokenStore

__all__ = ["ApprovalStore", "Decision"]

Decision = Literal["approve", "deny"]


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class ApprovalStore:
    def __init__(self, scripts: Scripts, tokens: TokenStore) -> None:
        self._scripts = scripts
        self._redis = scripts.redis
        self._tokens = tokens

    async def record(self, txn: str) -> TxRecord | None:
        """The transaction as approvers see it; ``None`` unless it was restricted."""
        rec = await self._tokens.record(txn)
        return rec if rec is not None and rec.preview_hash is not None else None

    async def decide(
        self,
        txn: str,
        by: str,
        decision: Decision,
        *,
        token_ttl_s: float,
        preview_hash: str,
        reason: str = "",
        final: bool = False,
    ) -> tuple[str, str, int]:
        """Apply one decision; returns (outcome, status, approvals so far). Outcomes:
        approved, denied, voted, duplicate, decided (already), missing."""
        found = await self._tokens.locate(txn)
        if found is None:
            return "missing", "", 0
        args: list[Arg] = [by, decision, repr(time.time()), int(token_ttl_s * 1000),
                           RETENTION_S * 1000, preview_hash, reason,
                           "final" if final else ""]  # fmt: skip
        try:
            res: Any = await self._scripts.call("decide", [Keys.tx(found[0])], args)
            if _text(res[0]) in {"approved", "denied"}:
                await self._redis.zrem(Keys.PENDING, txn)
        except StoreError:
            raise Unavailable("token store unavailable; nothing was decided") from None
        return _text(res[0]), _text(res[1]), int(res[2])

    async def pending(self, limit: int = 500) -> list[str]:
        """Transactions waiting for approval that have not expired (oldest expiry first)."""
        now = time.time()
        try:
            raw = await self._redis.zrangebyscore(Keys.PENDING, now, "+inf", start=0, num=limit)
        except StoreError:
            raise Unavailable("token store unavailable") from None
        return [_text(t) for t in raw]

    async def take_expired(self, limit: int = 500) -> list[str]:
        """Pending transactions whose approval time ran out, each returned to exactly one
        caller (the one whose removal from the pending index succeeded)."""
        try:
            raw = await self._redis.zrangebyscore(Keys.PENDING, "-inf", time.time(), 0, limit)
            due = [_text(t) for t in raw]
            if not due:
                return []
            async with self._redis.pipeline(transaction=False) as pipe:
                for txn in due:
                    pipe.zrem(Keys.PENDING, txn)
                removed = await pipe.execute()
        except StoreError:
            raise Unavailable("token store unavailable") from None
        return [t for t, gone in zip(due, removed, strict=True) if gone]

    async def pending_count(self) -> int:
        try:
            return int(await self._redis.zcard(Keys.PENDING))
        except StoreError:
            raise Unavailable("token store unavailable") from None
