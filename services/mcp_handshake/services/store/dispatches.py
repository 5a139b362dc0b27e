"""Which dispatches have run: one shared marker per transaction, across all executors.

An executor claims a transaction's marker (``SET NX PX``) before it calls the
target; a replayed dispatch, on any executor, finds the marker and runs
nothing. The marker outlives the dispatch's validity, so it cannot expire while
a replay would still be accepted. A reconcile dispatch (``attempt`` n > 0: a new
signed dispatch for the same transaction) has a marker of its own, so it runs
once more, once. Redis unavailable is ``Unavailable``: without
the marker nothing runs.
"""

from __future__ import annotations

import logging
import secrets

from mcp_handshake.shared.errors import Unavailable
from mcp_handshake.shared.subjects import Keys

from .redis import Client, StoreError
from .resp import Resp

__all__ = ["DispatchLog"]

log = logging.getLogger(__name__)


class DispatchLog:
    def __init__(self, redis: Client, fast: Resp | None = None) -> None:
        self._redis = redis
        #: A single Redis: the marker over the lean connection (``.resp``).
        self._fast = fast

    async def claim(self, txn: str, ttl_s: float, attempt: int = 0) -> bool:
        """Whether this call is the first to claim ``txn`` (the marker lives ``ttl_s``);
        ``attempt`` n > 0 claims the transaction's n-th reconcile run instead."""
        key = Keys.reconciled(txn, attempt) if attempt else Keys.dispatched(txn)
        # A unique value tells our own write apart from another executor's, should the
        # client's retry after a broken connection re-send a SET that had landed.
        mine = secrets.token_hex(8)
        ttl_ms = max(1, int(ttl_s * 1000))
        try:
            if self._fast is not None:
                if await self._fast.execute("SET", key, mine, "NX", "PX", ttl_ms) is not None:
                    return True
                held = await self._fast.execute("GET", key)
            elif await self._redis.set(key, mine, nx=True, px=ttl_ms):
                return True
            else:
                held = await self._redis.get(key)
        except StoreError:
            log.warning("dispatch log unavailable", extra={"txn": txn})
            raise Unavailable("dispatch log unavailable; nothing was executed") from None
        if isinstance(held, bytes):
            held = held.decode()
        return bool(held == mine)
