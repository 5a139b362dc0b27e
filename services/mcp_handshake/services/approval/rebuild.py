"""Pending approvals back into a Redis that lost them, from ``HANDSHAKE_PENDING``.

Each approval worker checks every second whether Redis still holds the
``Keys.RESTORED`` marker. The first to find it gone sets it (``SET NX``: one
worker restores, the others skip) and writes every pending entry of the KV
log back with the same one-round-trip write authorize uses, unless Redis
already knows the transaction. Decisions, heard on the core-NATS wake-up
subject every decision publishes, drop the transaction from the log.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from nats.aio.msg import Msg
from nats.errors import Error as NatsError

from mcp_handshake.services.runtime.build import Kit, duplicate_window
from mcp_handshake.services.store import Store
from mcp_handshake.services.store.pending import PendingLog
from mcp_handshake.services.store.redis import StoreError
from mcp_handshake.shared.errors import HandshakeError
from mcp_handshake.shared.subjects import Keys

__all__ = ["restore_pending", "run_rebuild"]

log = logging.getLogger(__name__)


async def restore_pending(store: Store, pending: PendingLog) -> int:
    """Write back every pending approval Redis does not hold; returns how many."""
    restored = 0
    async for entry in pending.entries():
        record = entry.record
        if await store.redis.exists(Keys.txn(record.txn)):
            continue
        await store.tokens.issue(entry.th, record, record.expires_at - time.time())
        restored += 1
    return restored


async def run_rebuild(kit: Kit, store: Store, poll_s: float = 1.0) -> None:
    """The approval worker's background task: restore when Redis lost everything."""
    nc, subjects = kit.nc, kit.settings.subjects
    while True:
        try:
            pending = await PendingLog.opened(
                nc.jetstream(), duplicate_window(kit.policy), kit.settings.stream_replicas
            )
            break
        except (NatsError, TimeoutError):
            log.warning("pending approvals log unavailable; retrying", exc_info=True)
            await asyncio.sleep(poll_s)

    async def on_decided(msg: Msg) -> None:
        await pending.drop(msg.subject.rsplit(".", 1)[-1])

    sub = await nc.subscribe(subjects.approval_decided("*"), cb=on_decided)
    try:
        while True:
            try:
                if await store.redis.set(Keys.RESTORED, b"1", nx=True):
                    try:
                        n = await restore_pending(store, pending)
                    except BaseException:
                        with contextlib.suppress(*StoreError):  # another worker tries again
                            await store.redis.delete(Keys.RESTORED)
                        raise
                    if n:
                        log.warning("restored %d pending approvals into an empty Redis", n)
            except (*StoreError, NatsError, TimeoutError, HandshakeError):
                log.debug("pending approvals not restored yet", exc_info=True)
            await asyncio.sleep(poll_s)
    finally:
        await sub.unsubscribe()
