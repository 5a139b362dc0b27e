"""Tokens that expire unused: found off the request path, and counted."""

from __future__ import annotations

import time
from typing import Any

from mcp_handshake.shared.errors import Unavailable
from mcp_handshake.shared.subjects import Keys

from .redis import Client, StoreError

__all__ = ["sweep_expired"]

_LIVE = {None, "granted", "pending_approval"}


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


async def sweep_expired(redis: Client) -> int:
    """Count and forget tokens whose time ran out unused; returns how many.

    Candidates are the live-set members past their score. A used token's record
    outlives its token, so a record that is gone, or still granted or pending past
    its time, was never used; one that was approved late is rescheduled at its new
    expiry.
    """
    now = time.time()
    try:
        txns = [_text(t) for t in await redis.zrangebyscore(Keys.LIVE, "-inf", now)]
        if not txns:
            return 0
        async with redis.pipeline(transaction=False) as pipe:
            for txn in txns:
                pipe.get(Keys.txn(txn))
            located = await pipe.execute()
        async with redis.pipeline(transaction=False) as pipe:
            for raw in located:
                th = _text(raw).partition(" ")[0] if raw else "-"
                pipe.hmget(Keys.tx(th), ["status", "expires_at"])
            records = await pipe.execute()
        expired, later = 0, {}
        for txn, (status, expires_at) in zip(txns, records, strict=True):
            state = _text(status) if status else None
            if state in _LIVE:
                new_expiry = float(expires_at) if expires_at else 0.0
                if state is not None and new_expiry > now:
                    later[txn] = new_expiry
                else:
                    expired += 1
        async with redis.pipeline(transaction=False) as pipe:
            pipe.zrem(Keys.LIVE, *[t for t in txns if t not in later])
            if later:
                pipe.zadd(Keys.LIVE, later)
            if expired:
                pipe.incrby(Keys.EXPIRED, expired)
            await pipe.execute()
    except StoreError:
        raise Unavailable("token store unavailable") from None
    return expired
