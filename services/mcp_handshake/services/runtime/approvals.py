"""The durable approval queue: JetStream stream ``HANDSHAKE_APPROVALS``.

Authorize workers publish one signed request per restricted transaction
(``Nats-Msg-Id`` = transaction id, so a retried publish is stored once) and
wait for the stream's ack; approval workers share one durable pull consumer,
so each request is handled by one worker, and requests published while no
approval worker runs wait in the stream. The request carries only the
transaction id: params stay in Redis.
"""

from __future__ import annotations

import logging
import time

import msgspec
from nats.aio.client import Client as NATS
from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig

from mcp_handshake.services.core.signing import DispatchSigner
from mcp_handshake.services.runtime.streams import ensure_stream
from mcp_handshake.shared.errors import Unavailable
from mcp_handshake.shared.protocol import INTERNAL_HEADER
from mcp_handshake.shared.subjects import Subjects
from mcp_handshake.shared.wire import ApprovalRequest

__all__ = ["DURABLE", "STREAM", "ApprovalQueue", "ensure_approval_stream"]

log = logging.getLogger(__name__)

STREAM = "HANDSHAKE_APPROVALS"
DURABLE = "approval-workers"


async def ensure_approval_stream(
    js: JetStreamContext, subjects: Subjects, max_age_s: float, *, replicas: int = 1
) -> None:
    """Create the approval queue with ``replicas`` if it is missing; an existing one is
    left as its operator configured it, unless its retention or subjects are wrong."""
    config = StreamConfig(
        name=STREAM,
        subjects=[subjects.approval_requests],
        retention=RetentionPolicy.WORK_QUEUE,
        storage=StorageType.FILE,
        discard=DiscardPolicy.OLD,
        max_age=max_age_s,
        duplicate_window=120.0,
        num_replicas=replicas,
    )
    await ensure_stream(js, config)


class ApprovalQueue:
    def __init__(self, nc: NATS, subjects: Subjects, signer: DispatchSigner) -> None:
        self._js = nc.jetstream()
        self._subjects = subjects
        self._signer = signer

    async def publish(self, txn: str) -> None:
        body = msgspec.json.encode(ApprovalRequest(txn=txn, requested_at=time.time()))
        headers = {"Nats-Msg-Id": txn, INTERNAL_HEADER: self._signer.sign(body)}
        try:
            await self._js.publish(
                self._subjects.approval_requests, body, timeout=2.0, headers=headers
            )
        except (NatsError, TimeoutError):
            log.warning("approval queue unavailable", extra={"txn": txn})
            raise Unavailable("approval queue unavailable; nothing was requested") from None
