"""The gate before a dispatch: the token consumed and the execute intent acknowledged.

Both must succeed before anything is dispatched. The intent is keyed by the
token (:func:`intent_key`), which only its holder can produce: a forged request
for someone else's transaction cannot take the key. By default it follows the
consume: only the attempt that won the consume takes the key, and a token its
holder sends several times at once runs exactly once. ``early``
(``HANDSHAKE_EXECUTE_INTENT=concurrent``, tiers without approval) publishes it
while the token is consumed. With approval it always follows: a transaction
still pending is executed again later with the same token.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import Callable, Coroutine
from typing import Any

from mcp_handshake.services.runtime.audit import Audit
from mcp_handshake.services.store import TokenStore, TxRecord
from mcp_handshake.shared.errors import HandshakeError

__all__ = ["Gate", "intent_key", "noted"]


def intent_key(th: str) -> str:
    """The execute intent's deduplication key: derived from the token hash (never the
    hash itself, which names the token's record in the store)."""
    return hashlib.sha256(b"handshake-intent\0" + th.encode()).hexdigest()[:32]


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
        self._intent = self._publish() if early else None

    def _publish(self) -> asyncio.Future[None]:
        return asyncio.ensure_future(self._audit.intent(key=intent_key(self._th), **self._facts))

    async def passed(self) -> TxRecord:
        gate = self._intent
        try:
            record = await self._consume
        except BaseException:
            if gate is not None:  # refused or failed: its outcome no longer matters
                self._later(_settle(gate))
            raise
        if gate is None:
            gate = self._publish()
        try:
            await gate
        except HandshakeError as exc:
            self._later(self._tokens.set_status(self._th, "failed"))
            raise noted(exc, {"tier": self._facts["tier"], "ph": self._facts["ph"]}) from None
        return record

    def abandon(self) -> None:
        """The request ended before :meth:`passed` was awaited: let both settle."""
        for task in (self._consume, self._intent):
            if task is not None:
                self._later(_settle(task))


async def _settle(task: asyncio.Future[Any]) -> None:
    with contextlib.suppress(HandshakeError):
        await task
