"""The gate before a dispatch: the token consumed and the execute intent acknowledged.

Both must succeed before anything is dispatched. The intent's ``Nats-Msg-Id``
comes from the token (:func:`intent_key`), which only its holder can produce: a
forged request for someone else's transaction cannot take it, and a token
presented again after its consume was lost (a Redis failover) finds it taken.

``after_consume`` publishes the intent once the consume has succeeded: only
the attempt that won the consume takes the key. ``concurrent`` (tiers without
approval) publishes it while the token is consumed, so the key may go to an
attempt that then loses the consume (the holder sent the token several times
at once). Then the two answers are reconciled, and the stream stays the
arbiter of "at most once" even if Redis forgets a consume:

* an attempt that took the key and will never dispatch (its consume was
  refused or failed) notes the intent's stream sequence in the token's record
  (``release_intent``);
* the attempt that won the consume but found the key taken waits for that
  note of the key's sequence, then publishes an intent of its own under a
  second key derived from that sequence (:func:`second_key`), and runs only if
  the stream had not seen it. No note (the key's holder ran, or the token was
  presented before a consume was lost): ``invalid_transaction``.

So every dispatch follows an acknowledged intent its own attempt took: the key
(whose holder never released it) or the second key of a released sequence, and
each is taken once in the stream's duplicate window. The decision's reasoning:
``docs/decisions.md``, "Single-call latency (issue 23, second half)". With
approval the intent always follows the consume: a transaction still pending is
executed again later with the same token.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any

from mcp_handshake.services.runtime.audit import Audit
from mcp_handshake.services.runtime.pubacks import PubAck
from mcp_handshake.services.store import TokenStore, TxRecord
from mcp_handshake.shared.errors import HandshakeError, InvalidTransaction

__all__ = ["Gate", "intent_key", "noted", "second_key"]

log = logging.getLogger(__name__)

#: How long the attempt that consumed a token waits for the key's holder to release it:
#: beyond the holder's consume (a store's timeout and retry) and its intent's ack.
RELEASE_WAIT_S = 3.0
_POLL_MAX_S = 0.1


def intent_key(th: str) -> str:
    """The execute intent's deduplication key: derived from the token hash (never the
    hash itself, which names the token's record in the store)."""
    return hashlib.sha256(b"handshake-intent\0" + th.encode()).hexdigest()[:32]


def second_key(th: str, seq: int) -> str:
    """The key of the intent of the attempt that consumed a token whose key was taken by
    the released intent at ``seq``."""
    return hashlib.sha256(f"handshake-intent-2\0{th}\0{seq}".encode()).hexdigest()[:32]


def noted(exc: HandshakeError, facts: dict[str, Any]) -> HandshakeError:
    exc.facts.update(facts)
    return exc


class Gate:
    """One request's consume (started at once) and execute intent; :meth:`passed`
    returns the consumed record once both have succeeded."""

    def __init__(
        self,
        audit: Audit,
        tokens: TokenStore,
        later: Callable[[Coroutine[Any, Any, None]], None],
        consume: Coroutine[Any, Any, TxRecord],
        intent: dict[str, Any],
        th: str,
        *,
        early: bool,
    ) -> None:
        self._audit, self._tokens, self._later = audit, tokens, later
        self._facts, self._th = intent, th
        self._consume = asyncio.ensure_future(consume)
        self._ack = self._publish(intent_key(th)) if early else None

    def _publish(self, key: str) -> asyncio.Future[PubAck]:
        return asyncio.ensure_future(self._audit.intent_ack(key=key, **self._facts))

    async def passed(self) -> TxRecord:
        try:
            record = await self._consume
        except BaseException:
            self.abandon()
            raise
        try:
            ack = await (self._ack or self._publish(intent_key(self._th)))
            if ack.duplicate:
                await self._second(ack.seq)
        except HandshakeError as exc:
            self._later(self._tokens.set_status(self._th, "failed"))
            raise noted(exc, {"tier": self._facts["tier"], "ph": self._facts["ph"]}) from None
        return record

    async def _second(self, seq: int) -> None:
        """The key was taken (``seq``): run only on its release, under the second key."""
        if self._ack is None or not await self._released(seq):
            log.error("execute intent seen before: refusing a replay",
                      extra={"txn": self._facts["txn"]})  # fmt: skip
            raise InvalidTransaction(transaction_id=self._facts["txn"])
        await self._audit.intent(key=second_key(self._th, seq), **self._facts)

    async def _released(self, seq: int) -> bool:
        deadline = time.monotonic() + RELEASE_WAIT_S
        pause = 0.001
        while await self._tokens.intent_released(self._th) != seq:
            if time.monotonic() + pause > deadline:
                return False
            await asyncio.sleep(pause)
            pause = min(pause * 2, _POLL_MAX_S)
        return True

    def abandon(self) -> None:
        """This attempt will never dispatch: let the consume settle and, if its intent took
        the key, release it."""
        self._later(_settle(self._consume))
        if self._ack is not None:
            self._later(self._release(self._ack))

    async def _release(self, ack: asyncio.Future[PubAck]) -> None:
        with contextlib.suppress(HandshakeError):
            taken = await ack
            if not taken.duplicate:
                await self._tokens.release_intent(self._th, taken.seq)


async def _settle(task: asyncio.Future[Any]) -> None:
    with contextlib.suppress(HandshakeError):
        await task
