"""A round: the first request of each of ``size`` concurrent members, sent together.

Each member either submits one request (:meth:`Round.submit`, which waits for
its own result) or leaves without one (:meth:`Round.leave`). Once no member is
left that could still submit, ``flush`` gets every queued request at once and
returns one result per request, in order (or raises: then each member raises
that error). Used by batches to pay one round trip for many operations.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

__all__ = ["Round"]

Q = TypeVar("Q")
R = TypeVar("R")


class Round(Generic[Q, R]):
    def __init__(self, size: int, flush: Callable[[list[Q]], Awaitable[list[R]]]) -> None:
        self._fresh = size
        self._flush_fn = flush
        self._queued: list[tuple[Q, asyncio.Future[R]]] = []
        self._task: asyncio.Task[None] | None = None

    async def submit(self, request: Q) -> R:
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._queued.append((request, future))
        self._fresh -= 1
        self._maybe_flush()
        return await future

    def leave(self) -> None:
        """A member that never submitted and now never will no longer holds the round."""
        self._fresh -= 1
        self._maybe_flush()

    def _maybe_flush(self) -> None:
        if self._fresh <= 0 and self._queued and self._task is None:
            queued, self._queued = self._queued, []
            self._task = asyncio.get_running_loop().create_task(self._flush(queued))

    async def _flush(self, queued: list[tuple[Q, asyncio.Future[R]]]) -> None:
        try:
            results = await self._flush_fn([q for q, _ in queued])
        except Exception as exc:
            for _, future in queued:
                if not future.done():
                    future.set_exception(exc)
            return
        for (_, future), result in zip(queued, results, strict=True):
            if not future.done():
                future.set_result(result)
