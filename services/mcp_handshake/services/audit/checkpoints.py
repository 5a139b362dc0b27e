"""Signed checkpoints off-host: JetStream stream ``HANDSHAKE_CHECKPOINTS``.

Whoever can edit the audit log's host can cut the log and its side file of
checkpoints together. A copy of every signed checkpoint on the bus, in a
stream that refuses message deletion and purging (``deny_delete``,
``deny_purge``: not even the operator may remove one), lets
``audit verify --against-stream`` notice a log cut before a checkpoint that
was already published. Only the audit worker publishes there.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import NotFoundError

from mcp_handshake.services.audit.log import AuditLogWriter
from mcp_handshake.services.audit.names import CHECKPOINT_STREAM, CHECKPOINT_SUBJECT
from mcp_handshake.services.runtime.streams import ensure_stream

__all__ = ["STREAM", "SUBJECT", "ensure_checkpoint_stream", "publish_pending", "read_published"]

log = logging.getLogger(__name__)

STREAM = CHECKPOINT_STREAM
SUBJECT = CHECKPOINT_SUBJECT


async def ensure_checkpoint_stream(js: JetStreamContext, *, replicas: int = 1) -> None:
    config = StreamConfig(
        name=STREAM,
        subjects=[SUBJECT],
        retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
        discard=DiscardPolicy.NEW,  # never age out or drop an old checkpoint
        deny_delete=True,
        deny_purge=True,
        num_replicas=replicas,
    )
    await ensure_stream(js, config)


async def _last_published(js: JetStreamContext) -> int:
    try:
        msg = await js.get_last_msg(STREAM, SUBJECT)
    except NotFoundError:
        return 0
    return int(json.loads(msg.data or b"{}").get("seq", 0))


async def publish_pending(js: JetStreamContext, writer: AuditLogWriter, *, catch_up: bool) -> None:
    """Publish the writer's unpublished checkpoints, oldest first; keep the rest on failure.

    With ``catch_up`` (after taking over the log) those the stream already holds
    are dropped first. Each carries its log position as ``Nats-Msg-Id``, so a
    retry is stored once.
    """
    try:
        if catch_up:
            done = await _last_published(js)
            writer.unpublished = [c for c in writer.unpublished if c["seq"] > done]
        while writer.unpublished:
            cp = writer.unpublished[0]
            msg_id = f"audit.{cp['seq']}.{cp['prev'][:16]}"
            await js.publish(SUBJECT, json.dumps(cp).encode(), headers={"Nats-Msg-Id": msg_id})
            writer.unpublished.pop(0)
    except (NatsError, TimeoutError):
        log.warning("could not publish %d audit checkpoints; will retry", len(writer.unpublished))


async def read_published(js: JetStreamContext) -> list[dict[str, Any]]:
    """Every checkpoint in the stream, oldest first."""
    info = await js.stream_info(STREAM)
    out: list[dict[str, Any]] = []
    if info.state.messages == 0:
        return out
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        try:
            msg = await js.get_msg(STREAM, seq)
        except NotFoundError:
            continue
        try:
            out.append(json.loads(msg.data or b""))
        except ValueError:
            out.append({"unreadable": seq})
    return out
