"""Which dispatches have run: one shared marker per transaction, across all executors.

An executor claims a transaction's marker (``SET NX PX``) before it calls the
target; a replayed dispatch, on any executor, finds the marker and runs
nothing. The marker outlives the dispatch's validity, so it cannot expire while
a replay would still be accepted. A reconcile dispatch (``attempt`` n > 0: a new
signed dispatch for the same transaction) has a marker of its own, so it runs
once more, once. Redis unavailable is ``Unavailable``: without
the marker nothing runs. :meth:`DispatchLog.claim_many` claims the markers of
many dispatches (a batch's) in one pipeline, each exactly as :meth:`claim` would.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Sequence
from typing import Any

from mcp_handshake.shared.errors import Unavailable
from mcp_handshake.shared.subjects import Keys

from .redis import Client, StoreError
from .resp import Resp

__all__ = ["Claim", "DispatchLog"]

#: One marker to claim: ``(txn, ttl_s, attempt)``, as :meth:`DispatchLog.claim` takes them.
Claim = tuple[str, float, int]


def _key(txn: str, attempt: int) -> str:
    return Keys.reconciled(txn, attempt) if attempt else Keys.dispatched(txn)


def _px(ttl_s: float) -> int:
    return max(1, int(ttl_s * 1000))


log = logging.getLogger(__name__)


class DispatchLog:
    def __init__(self, redis: Client, fast: Resp | None = None) -> None:
        self._redis = redis
        #: A single Redis: the marker over the lean connection (``.resp``).
        self._fast = fast

    async def claim(self, txn: str, ttl_s: float, attempt: int = 0) -> bool:
        """Whether this call is the first to claim ``txn`` (the marker lives ``ttl_s``);
        ``attempt`` n > 0 claims the transaction's n-th reconcile run instead."""
        key = _key(txn, attempt)
        # A unique value tells our own write apart from another executor's, should the
        # client's retry after a broken connection re-send a SET that had landed.
        mine = secrets.token_hex(8)
        try:
            if await self._command("SET", key, mine, "NX", "PX", _px(ttl_s)):
                return True
            held = await self._command("GET", key)
        except StoreError:
            log.warning("dispatch log unavailable", extra={"txn": txn})
            raise Unavailable("dispatch log unavailable; nothing was executed") from None
        return bool(_decoded(held) == mine)

    async def claim_many(self, claims: Sequence[Claim]) -> list[bool]:
        """:meth:`claim` for each of ``claims``, in order: every ``SET NX PX`` in one
        pipeline (one round trip on a single Redis), then, for the markers found held,
        one more to read them back (our own write, re-sent by a retry, is still ours).
        Each marker is its own atomic ``SET NX``, so a transaction twice in ``claims``
        is claimed once. Redis unavailable is ``Unavailable`` for all of them."""
        if not claims:
            return []
        keys = [_key(txn, attempt) for txn, _, attempt in claims]
        mine = [secrets.token_hex(8) for _ in claims]
        sets = [("SET", key, value, "NX", "PX", _px(ttl_s))
                for key, value, (_, ttl_s, _) in zip(keys, mine, claims, strict=True)]  # fmt: skip
        try:
            won = [bool(ok) for ok in await self._pipelined(sets)]
            lost = [i for i, ok in enumerate(won) if not ok]
            if lost:
                held = await self._pipelined([("GET", keys[i]) for i in lost])
                for i, value in zip(lost, held, strict=True):
                    won[i] = _decoded(value) == mine[i]
        except StoreError:
            log.warning("dispatch log unavailable (%d dispatches)", len(claims))
            raise Unavailable("dispatch log unavailable; nothing was executed") from None
        return won

    async def _command(self, *args: Any) -> Any:
        """One command over the lean connection on a single Redis, redis-py otherwise
        (``SET NX`` answers ``OK`` or ``True`` when set, nothing when not)."""
        if self._fast is not None:
            return await self._fast.execute(*args)
        return await self._redis.execute_command(*args)

    async def _pipelined(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        """``commands`` in one write on the lean connection, or one redis-py pipeline
        (Sentinel, Cluster); an error reply fails the whole round, as a raising pipeline
        does."""
        if self._fast is not None:
            return _checked(await self._fast.execute_many(commands))
        pipe = self._redis.pipeline(transaction=False)
        for command in commands:
            pipe.execute_command(*command)
        return list(await pipe.execute())


def _decoded(value: Any) -> Any:
    return value.decode() if isinstance(value, bytes) else value


def _checked(replies: list[Any]) -> list[Any]:
    """``replies``, or the first error reply among them raised."""
    for reply in replies:
        if isinstance(reply, Exception):
            raise reply
    return replies
