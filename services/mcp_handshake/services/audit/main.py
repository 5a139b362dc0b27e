"""Wiring of an audit worker: the one writer of the audit log (others stand by).

The writer reads ``HANDSHAKE_AUDIT`` in order from the first stream sequence
not yet in the log (an ordered consumer), so events published while no audit
worker ran are written when one starts, and an event seen twice is written
once.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.errors import Error as NatsError
from nats.js.api import ConsumerConfig, DeliverPolicy

from mcp_handshake.services.audit.log import AuditLogWriter
from mcp_handshake.services.runtime.approvals import ensure_approval_stream
from mcp_handshake.services.runtime.audit import (
    EVENT_KINDS,
    STREAM,
    SUBJECT_PREFIX,
    ensure_audit_stream,
)
from mcp_handshake.services.runtime.build import duplicate_window, open_kit
from mcp_handshake.services.runtime.worker import Worker
from mcp_handshake.shared.keys import load_private_key
from mcp_handshake.shared.settings import Settings

__all__ = ["audit_log_path", "build"]

log = logging.getLogger(__name__)

BATCH = 512
_event = msgspec.json.Decoder()


def audit_log_path(settings: Settings) -> Path:
    return settings.home / "audit" / "audit.log"


@dataclass
class _State:
    role: str = "standby"
    stream_last: int = 0
    refused: int = 0


def _entry(msg: Msg, state: _State) -> Any:
    """What the log records for one stream message: the event, or why it was refused.

    Each worker kind may publish only under ``handshake.audit.<kind>.`` (the bus
    enforces it); an event whose content claims another kind, or a kind of event
    that kind never records, is refused here. A refusal still takes its place in
    the log, so the stream sequence has no hole.
    """
    try:
        event: Any = _event.decode(msg.data)
    except msgspec.DecodeError:
        return {"unreadable": True, "subject": msg.subject}
    kind = msg.subject.removeprefix(f"{SUBJECT_PREFIX}.").partition(".")[0]
    worker = event.get("worker") if isinstance(event, dict) else None
    claimed = worker.partition("@")[0] if isinstance(worker, str) else None
    if claimed != kind or event.get("kind") not in EVENT_KINDS.get(kind, ()):
        state.refused += 1
        log.error("audit event refused: its content does not match its subject %s", msg.subject)
        return {"refused": True, "subject": msg.subject, "reason": "content does not match subject"}
    return event


async def _write_forever(nc: NATS, writer: AuditLogWriter, state: _State) -> None:
    # flock has no async wake-up; polling twice a second is the standby's whole job.
    while not writer.try_lock():  # noqa: ASYNC110
        await asyncio.sleep(0.5)
    writer.open()
    state.role = "active"
    log.info("audit writer active from stream sequence %d", writer.last_stream_seq + 1)
    queue: asyncio.Queue[Msg] = asyncio.Queue()

    async def on_msg(msg: Msg) -> None:
        await queue.put(msg)

    config = ConsumerConfig(
        deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=writer.last_stream_seq + 1
    )
    js = nc.jetstream()
    sub = await js.subscribe(
        f"{SUBJECT_PREFIX}.>", stream=STREAM, cb=on_msg, ordered_consumer=True, config=config
    )
    try:
        while True:
            try:
                first = await asyncio.wait_for(queue.get(), timeout=1.0)
            except TimeoutError:
                writer.sync()  # time-based checkpoint when idle
                continue
            batch = [first]
            while len(batch) < BATCH and not queue.empty():
                batch.append(queue.get_nowait())
            for msg in batch:
                writer.append(msg.metadata.sequence.stream, _entry(msg, state))
            writer.sync()
    finally:
        try:
            await sub.unsubscribe()
        except NatsError:
            pass


async def build(settings: Settings, nc: NATS) -> Worker:
    kit = open_kit(settings, nc, "audit")
    cfg = kit.config
    js = nc.jetstream()
    # The audit worker manages the streams; other workers wait for them.
    replicas = settings.stream_replicas
    await ensure_audit_stream(js, duplicate_window(kit.policy), replicas=replicas)
    await ensure_approval_stream(
        js, settings.subjects, kit.policy.max_lifetime_s + 60, replicas=replicas
    )
    writer = AuditLogWriter(audit_log_path(settings), load_private_key(cfg.resolve(cfg.keys.audit)))
    state = _State()

    metrics = kit.metrics

    def stats() -> dict[str, Any]:
        return {
            "role": state.role,
            "written": writer.written,
            "refused": state.refused,
            "last_stream_seq": writer.last_stream_seq,
            "lag": metrics.gauges.get("audit_lag"),
            "log": str(writer.path),
        }

    async def watch_lag() -> None:
        while True:
            if state.role == "active":
                try:
                    info = await js.stream_info(STREAM)
                    lag = max(info.state.last_seq - writer.last_stream_seq, 0)
                    metrics.gauges["audit_lag"] = float(lag)
                except (NatsError, TimeoutError):
                    metrics.gauges.pop("audit_lag", None)
            await asyncio.sleep(2.0)

    async def close() -> None:
        writer.close()

    return kit.worker(
        "Writes the hash-chained, signed audit log",
        [],
        background=[lambda: _write_forever(nc, writer, state), watch_lag],
        closers=[close],
        extra_stats=stats,
    )
