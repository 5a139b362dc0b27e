"""Many dispatches in one signed message (``handshake.internal.batch.executor.<target>``).

The message's detached JWS (``typ: handshake-dispatch-batch+jws``) is checked
once over its exact bytes; then each item runs through
:func:`~.handler.handle_dispatch` as a dispatch of its own (expiry, tool and
target checks, the once-only run marker), all concurrently. One result per
item: the dispatch reply, or the error body the single dispatch would have
sent; one item's failure is its own.

The items' run markers are claimed together: each item's claim joins a round
(:class:`_Claims`) that goes to Redis as one pipeline once every item has
claimed or finished without claiming (``DispatchLog.claim_many``). Each marker is
still its own ``SET NX``, so an item whose transaction already ran, in this
batch or anywhere else, is refused alone.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import Any

import msgspec

from mcp_handshake.services.core.signing import DispatchVerifier
from mcp_handshake.services.executor.handler import ExecutorDeps, handle_dispatch
from mcp_handshake.services.runtime.batch import run_batch
from mcp_handshake.services.runtime.endpoint import Request
from mcp_handshake.services.store import DispatchLog
from mcp_handshake.services.store.dispatches import Claim
from mcp_handshake.shared.batch import BatchReply, DispatchBatch
from mcp_handshake.shared.errors import Forbidden
from mcp_handshake.shared.protocol import DISPATCH_HEADER
from mcp_handshake.shared.rounds import Round

__all__ = ["ExecutorBatchDeps", "handle_dispatch_batch"]

log = logging.getLogger(__name__)


class _Checked(DispatchVerifier):
    """The items' verifier: the message that carried them was verified already."""

    def __init__(self) -> None:  # no keys: nothing is verified here
        pass

    def verify(self, signature: str | None, body: bytes) -> bool:
        return True


class _Claims(DispatchLog):
    """One item's dispatch log: its claim joins the batch's round of claims."""

    def __init__(self, round_: Round[Claim, bool]) -> None:  # no super(): no Redis here
        self._round = round_
        self._state = "fresh"

    def leave(self) -> None:
        """The item ended; if it never claimed, the round no longer waits for it."""
        if self._state == "fresh":
            self._state = "left"
            self._round.leave()

    async def claim(self, txn: str, ttl_s: float, attempt: int = 0) -> bool:
        if self._state != "fresh":  # one claim per item; a second is a bug, never a pass
            raise RuntimeError("a batch item claimed its marker twice")
        self._state = "submitted"
        return await self._round.submit((txn, ttl_s, attempt))


@dataclass(frozen=True, slots=True)
class ExecutorBatchDeps:
    #: Verifies the batch message (``typ: handshake-dispatch-batch+jws``).
    verifier: DispatchVerifier
    single: ExecutorDeps

    @property
    def items(self) -> ExecutorDeps:
        return dataclasses.replace(self.single, verifier=_Checked())


async def handle_dispatch_batch(req: Request[DispatchBatch], deps: ExecutorBatchDeps) -> BatchReply:
    if not deps.verifier.verify(req.header(DISPATCH_HEADER), req.data):
        log.warning("refused a dispatch batch without a valid signature")
        raise Forbidden("dispatch signature missing or invalid")
    items = deps.items
    requests = [Request(d, b"", {}, req.subject) for d in req.body.items]
    claims: Round[Claim, bool] = Round(len(requests), deps.single.dispatches.claim_many)

    async def one(item: Request[Any], _: int) -> msgspec.Struct:
        claim = _Claims(claims)
        try:
            return await handle_dispatch(item, dataclasses.replace(items, dispatches=claim))
        finally:
            claim.leave()

    return await run_batch(requests, one, None)
