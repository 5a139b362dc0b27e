"""Audit events that go to ``HANDSHAKE_AUDIT`` as one message: the group envelope.

A worker's non-gated events emitted together (a batch's operations, or one call's
``execute.succeeded`` and ``receipt.issued``) are published as one JetStream
message on ``handshake.audit.<worker kind>.group``::

    {"v": 1, "events": [<event>, <event>, ...]}

each ``<event>`` exactly the JSON it would be alone (encoded once, by msgspec,
and embedded as is). The message's ``Nats-Msg-Id`` is ``group.`` and the SHA-256
of its events' ids (one per line), so a group retried after a lost ack is stored
once, like a single event. A group is split to stay under :data:`MAX_GROUP_BYTES`
(and half the server's ``max_payload``); a part of one event is sent alone, as
before. The gated execute intent is never grouped: its own ``Nats-Msg-Id`` is the
at-most-once arbiter.

The audit writer expands a group into one log line per event, in order (see
``audit.log``); :func:`expand` is how any reader of the stream does the same.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import msgspec

__all__ = ["GROUP", "MAX_GROUP_BYTES", "AuditGroup", "expand", "is_group", "split"]

#: The last subject token of a group message (never an event kind).
GROUP = "group"
#: The largest envelope sent: far under NATS's default ``max_payload`` (1 MiB).
MAX_GROUP_BYTES = 256 * 1024
_ENVELOPE_BYTES = 32


class _Envelope(msgspec.Struct):
    events: list[msgspec.Raw]
    v: int = 1


class AuditGroup:
    """Several events as one message: its envelope bytes and its ``Nats-Msg-Id``."""

    __slots__ = ("data", "events", "msg_id")

    def __init__(self, events: Sequence[Any], encoded: Sequence[bytes]) -> None:
        self.events = list(events)
        self.data = msgspec.json.encode(_Envelope([msgspec.Raw(e) for e in encoded]))
        ids = "\n".join(e.id for e in events).encode()
        self.msg_id = f"{GROUP}.{hashlib.sha256(ids).hexdigest()}"

    def __len__(self) -> int:
        return len(self.events)


def split(events: Sequence[Any], encoded: Sequence[bytes], max_bytes: int) -> list[Any]:
    """``events`` (with their encodings) as messages of at most ``max_bytes``: an
    :class:`AuditGroup` per part of several events, the event itself for a part of one."""
    out: list[Any] = []
    start, size = 0, _ENVELOPE_BYTES
    for i, data in enumerate(encoded):
        if i > start and size + len(data) + 1 > max_bytes:
            out.append(_message(events[start:i], encoded[start:i]))
            start, size = i, _ENVELOPE_BYTES
        size += len(data) + 1
    if start < len(events):
        out.append(_message(events[start:], encoded[start:]))
    return out


def _message(events: Sequence[Any], encoded: Sequence[bytes]) -> Any:
    return events[0] if len(events) == 1 else AuditGroup(events, encoded)


def is_group(subject: str) -> bool:
    """A group message's subject (``handshake.audit.<worker kind>.group``)."""
    return subject.endswith("." + GROUP)


_decode = msgspec.json.Decoder()


def expand(subject: str, data: bytes) -> list[Any]:
    """The events of one stream message: the group's, in order, or the message's own
    (decoded JSON, not checked). Raises ``msgspec.DecodeError`` if unreadable, and
    ``ValueError`` for a group subject without a list of events."""
    body = _decode.decode(data)
    if not is_group(subject):
        return [body]
    events = body.get("events") if isinstance(body, dict) else None
    if not isinstance(events, list) or not events:
        raise ValueError("not a group of audit events")
    return events
