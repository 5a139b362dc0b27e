"""A bounded local outbox: items are sent with bounded concurrency and retried, with
backoff, until they are acknowledged.

A send that fails (a timeout while a NATS node is lost, a stream with no leader)
puts the item back at the front and pauses sending for a backoff that doubles up
to ``backoff_max``; the first success resets it. Nothing is dropped while the
outbox holds fewer than ``hard_limit`` items. ``full`` (``limit`` reached) is the
signal for the owner to stop accepting work that would add more; the margin up
to ``hard_limit`` absorbs what the work already accepted still produces.

With ``weight``, an item counts as that many (a group of audit events sent as one
message counts as its events): ``full``, ``limit``, ``hard_limit``, ``sent`` and
what ``drain`` reports are in weight, and ``concurrency`` bounds sends. An item
is sent, retried and dropped whole.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

__all__ = ["Outbox"]

log = logging.getLogger(__name__)

T = TypeVar("T")


class Outbox(Generic[T]):
    """Sends items with ``send`` until each succeeds; see the module docstring."""

    def __init__(
        self,
        send: Callable[[T], Awaitable[object]],
        *,
        limit: int = 10_000,
        hard_limit: int | None = None,
        concurrency: int = 64,
        backoff_min: float = 0.1,
        backoff_max: float = 5.0,
        name: str = "outbox",
        weight: Callable[[T], int] | None = None,
    ) -> None:
        if limit < 1 or concurrency < 1:
            raise ValueError("limit and concurrency must be positive")
        self._send = send
        self._weight: Callable[[T], int] = weight or _one
        self.limit = limit
        self.hard_limit = hard_limit if hard_limit is not None else limit + 4 * 1024
        self._concurrency = concurrency
        self._backoff = (backoff_min, backoff_max)
        self._name = name
        self._queue: deque[T] = deque()
        #: The weight of the queued items, and of the items being sent.
        self._queued = 0
        self._inflight = 0
        #: Sends under way: what ``concurrency`` bounds.
        self._sending = 0
        self._delay = 0.0
        self._resume_at = 0.0
        self._wake: asyncio.Event | None = None
        self._pump: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._empty = asyncio.Event()
        self._empty.set()
        self._stopping = False
        self.sent = 0
        self.retried = 0
        self.dropped = 0

    def __len__(self) -> int:
        """The weight of the items not yet acknowledged (waiting or being sent)."""
        return self._queued + self._inflight

    @property
    def full(self) -> bool:
        """At or above ``limit``: accept no work that would add items."""
        return len(self) >= self.limit

    @property
    def failing(self) -> bool:
        """The last send failed (sending is backing off)."""
        return self._delay > 0

    def put(self, item: T) -> bool:
        """Queue ``item``; ``False`` (and its weight counted in ``dropped``) only if it
        would take the outbox past ``hard_limit``.

        With nothing waiting, no backoff and a free slot, the send starts at once: it
        joins the publishes of the same loop turn (a reply, the other events) in one
        socket write instead of waiting a turn for the pump."""
        weight = self._weight(item)
        if len(self) + weight > self.hard_limit:
            self.dropped += weight
            return False
        self._empty.clear()
        if not self._queue and not self._delay and self._sending < self._concurrency:
            self._start(item)
            return True
        self._queue.append(item)
        self._queued += weight
        self._poke()
        return True

    def _poke(self) -> None:
        """Wake the pump, starting it if it is not running (not while ``drain`` stops it)."""
        if self._stopping:
            return
        if self._pump is None or self._pump.done():
            self._wake = asyncio.Event()
            self._pump = asyncio.get_running_loop().create_task(self._run())
        assert self._wake is not None
        self._wake.set()

    def _start(self, item: T) -> None:
        self._inflight += self._weight(item)
        self._sending += 1
        task = asyncio.get_running_loop().create_task(self._send_one(item))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self) -> None:
        assert self._wake is not None
        wake = self._wake
        while True:
            if (
                not self._queue
                or (self._delay and self._inflight)  # failing: one probe at a time
                or self._sending >= self._concurrency
            ):
                wake.clear()
                await wake.wait()
                continue
            pause = self._resume_at - time.monotonic()
            if pause > 0:
                await asyncio.sleep(pause)
                continue
            item = self._queue.popleft()
            self._queued -= self._weight(item)
            self._start(item)

    async def _send_one(self, item: T) -> None:
        weight = self._weight(item)
        try:
            await self._send(item)
        except asyncio.CancelledError:
            self._queue.appendleft(item)
            self._queued += weight
            raise
        except Exception as exc:  # any failure is retried: the item must not be lost
            self._failed(item, weight, exc)
        else:
            self._succeeded(weight)
        finally:
            self._done(weight)

    def _failed(self, item: T, weight: int, exc: BaseException) -> None:
        """Back to the front of the queue, whole, and back off."""
        self._queue.appendleft(item)
        self._queued += weight
        self.retried += weight
        low, high = self._backoff
        if self._delay == 0:
            log.warning("%s: send failed (%s); retrying", self._name, type(exc).__name__)
        self._delay = min(max(self._delay * 2, low), high)
        self._resume_at = time.monotonic() + self._delay

    def _succeeded(self, n: int) -> None:
        self.sent += n
        if self._delay:
            log.info("%s: sending again (%d waiting)", self._name, len(self._queue))
        self._delay = 0.0

    def _done(self, n: int) -> None:
        """A send of items of weight ``n`` ended (whatever its outcome)."""
        self._inflight -= n
        self._sending -= 1
        if not len(self):
            self._empty.set()
        if self._queue:
            self._poke()

    async def drain(self, timeout: float = 5.0) -> int:
        """Wait up to ``timeout`` for everything to be sent, then stop; returns the weight
        left unsent (each logged as an error by the owner)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._empty.wait(), timeout)
        left = len(self)
        self._stopping = True
        for task in [*self._tasks, *([self._pump] if self._pump else [])]:
            task.cancel()
        await asyncio.gather(*self._tasks, *([self._pump] if self._pump else []),
                             return_exceptions=True)  # fmt: skip
        self._pump = None
        self._stopping = False
        return left


def _one(_item: object) -> int:
    return 1
