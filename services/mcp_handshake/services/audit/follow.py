"""The active writer's loop: read ``HANDSHAKE_AUDIT`` in order, write, check continuity.

The writer reads the stream with an ordered consumer from the first sequence
not yet in the log. Before writing a batch it asks the stream for its
identity: messages received before an answer that still names the log's
stream are that stream's, so a re-created stream is caught before any of its
messages is written. Any sequence other than the next one stops the writer
(see ``log``); so does a re-created stream noticed while idle. A group message
(``runtime.audit_group``) is written as one line per event.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.errors import Error as NatsError
from nats.js.api import ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError

from mcp_handshake.services.audit.checkpoints import publish_pending
from mcp_handshake.services.audit.continuity import Found, identity, inspect
from mcp_handshake.services.audit.log import AuditLogWriter
from mcp_handshake.services.runtime.audit import EVENT_KINDS, STREAM, SUBJECT_PREFIX
from mcp_handshake.services.runtime.audit_group import expand, is_group

__all__ = ["BATCH", "WriterState", "follow"]

log = logging.getLogger(__name__)

BATCH = 512
#: The deepest nesting of lists and objects in an event the writer records.
MAX_DEPTH = 8


@dataclass
class WriterState:
    role: str = "standby"  # standby | active | halted
    refused: int = 0
    #: Set when an operator accepted the open gap: the loop reads again.
    resumed: asyncio.Event = field(default_factory=asyncio.Event)


def entries(msg: Msg, state: WriterState) -> tuple[list[Any], bool]:
    """What the log records for one stream message (the event, or each event of a
    group, or why it was refused), and whether it was a group.

    Each worker kind may publish only under ``handshake.audit.<kind>.`` (the bus
    enforces it); an event whose content claims another kind, or a kind of event
    that kind never records, or that is nested deeper than :data:`MAX_DEPTH`, is
    refused here (in a group, that event alone); a message too deep to decode is
    unreadable. A refusal still takes its place in the log, so the stream sequence
    has no hole.
    """
    try:
        events = expand(msg.subject, msg.data)
    except (ValueError, RecursionError):  # msgspec's DecodeError too; nested too deep
        return [{"unreadable": True, "subject": msg.subject}], False
    kind = msg.subject.removeprefix(f"{SUBJECT_PREFIX}.").partition(".")[0]
    return [_checked(event, kind, msg.subject, state) for event in events], is_group(msg.subject)


def _checked(event: Any, kind: str, subject: str, state: WriterState) -> Any:
    worker = event.get("worker") if isinstance(event, dict) else None
    claimed = worker.partition("@")[0] if isinstance(worker, str) else None
    what = event.get("kind") if isinstance(event, dict) else None
    if claimed != kind or not isinstance(what, str) or what not in EVENT_KINDS.get(kind, ()):
        reason = "content does not match subject"
    elif _too_deep(event, MAX_DEPTH):
        reason = "nested deeper than any audit event"
    else:
        return event
    state.refused += 1
    log.error("audit event refused (%s): subject %s", reason, subject)
    return {"refused": True, "subject": subject, "reason": reason}


def _too_deep(value: Any, depth: int) -> bool:
    """Lists and objects nested more than ``depth`` deep (an event's are 2 at most;
    a log line far deeper could overflow the stack of a JSON reader of the log)."""
    if isinstance(value, dict):
        children: Any = value.values()
    elif isinstance(value, list):
        children = value
    else:
        return False
    return depth == 0 or any(_too_deep(v, depth - 1) for v in children)


def halt(writer: AuditLogWriter, state: WriterState, found: Found) -> None:
    claims = writer.halt(found)
    state.role = "halted"
    state.resumed.clear()
    log.error(
        "AUDIT WRITER HALTED: %s after stream sequence %d (next available %d; log follows %s, "
        "stream is %s); nothing more is written until an operator runs "
        "`mcp-handshake audit resume --accept-gap`",
        claims["reason"], claims["after"], claims["next"], claims["stream"], claims["found"],
    )  # fmt: skip


async def check(nc: NATS, writer: AuditLogWriter, state: WriterState) -> bool:
    """Compare the stream with the log; halt on a discontinuity. True if still writing."""
    try:
        info = await nc.jetstream().stream_info(STREAM)
    except NotFoundError:
        return True  # deleted: nothing to read; a new one is judged when it appears
    if writer.stream is None:
        writer.begin(identity(info))
    found = inspect(writer.stream, writer.last_stream_seq, info)
    if found is not None:
        halt(writer, state, found)
        return False
    return True


async def _write_batch(nc: NATS, writer: AuditLogWriter, state: WriterState,
                       batch: list[Msg]) -> bool:  # fmt: skip
    if not await check(nc, writer, state):
        return False
    for msg in batch:
        seq = msg.metadata.sequence.stream
        if seq <= writer.last_stream_seq:
            continue  # a redelivery of a message already written
        events, grouped = entries(msg, state)
        if not (writer.append_group(seq, events) if grouped else writer.append(seq, events[0])):
            info = await nc.jetstream().stream_info(STREAM)
            halt(writer, state, Found("gap", writer.last_stream_seq, seq, writer.stream,
                                      identity(info)))  # fmt: skip
            return False
    writer.sync()
    await publish_pending(nc.jetstream(), writer, catch_up=False)
    return True


async def _read_until_halted(nc: NATS, writer: AuditLogWriter, state: WriterState) -> None:
    queue: asyncio.Queue[Msg] = asyncio.Queue()

    async def on_msg(msg: Msg) -> None:
        await queue.put(msg)

    config = ConsumerConfig(
        deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=writer.last_stream_seq + 1
    )
    sub = await nc.jetstream().subscribe(
        f"{SUBJECT_PREFIX}.>", stream=STREAM, cb=on_msg, ordered_consumer=True, config=config
    )
    try:
        while True:
            try:
                first = await asyncio.wait_for(queue.get(), timeout=1.0)
            except TimeoutError:
                if not await check(nc, writer, state):
                    return
                writer.sync()  # time-based checkpoint when idle
                await publish_pending(nc.jetstream(), writer, catch_up=False)
                continue
            batch = [first]
            while len(batch) < BATCH and not queue.empty():
                batch.append(queue.get_nowait())
            if not await _write_batch(nc, writer, state, batch):
                return
    finally:
        try:
            await sub.unsubscribe()
        except NatsError:
            pass


async def follow(nc: NATS, writer: AuditLogWriter, state: WriterState) -> None:
    """Stand by for the log's lock, then write for as long as the worker runs."""
    # flock has no async wake-up; polling twice a second is the standby's whole job.
    while not writer.try_lock():  # noqa: ASYNC110
        await asyncio.sleep(0.5)
    writer.open()
    await publish_pending(nc.jetstream(), writer, catch_up=True)
    state.role = "halted" if writer.gap is not None else "active"
    log.info("audit writer %s from stream sequence %d", state.role, writer.last_stream_seq + 1)
    while True:
        if state.role == "halted":
            await state.resumed.wait()
            state.role = "active"
            continue
        try:
            if not await check(nc, writer, state):
                continue
            await _read_until_halted(nc, writer, state)
        except (NatsError, TimeoutError):
            log.warning("audit stream unreachable; retrying", exc_info=True)
            await asyncio.sleep(1.0)
