"""The identity of the stream the log follows, and how a reset or a hole is recognised.

A JetStream stream is identified by its name and creation time: a stream
deleted and created again under the same name starts its sequence over, and
its creation time differs. The log records that identity (its first line,
and every accepted gap), so the writer can tell "the next message" from "a
message of another stream that happens to carry the next number".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from nats.js.api import StreamInfo

__all__ = ["Found", "available_from", "identity", "inspect"]


def identity(info: StreamInfo) -> dict[str, Any]:
    """What the log records of a stream: name, creation time, first sequence."""
    created = info.created.isoformat() if info.created is not None else None
    return {"stream": info.config.name, "created": created, "first_seq": info.state.first_seq}


def available_from(info: StreamInfo) -> int:
    """The lowest stream sequence still readable (one past the last if it holds none)."""
    if info.state.messages == 0:
        return info.state.last_seq + 1
    return max(info.state.first_seq, 1)


def same_stream(a: dict[str, Any] | None, b: dict[str, Any] | None) -> bool:
    if a is None or b is None:
        return False
    return bool(a.get("stream") == b.get("stream") and a.get("created") == b.get("created"))


@dataclass(frozen=True)
class Found:
    """A discontinuity: the writer must stop here until an operator accepts it."""

    reason: str  # "reset" (another stream) or "gap" (a hole in this stream's sequence)
    after: int  # the last stream sequence in the log (0: none)
    next: int  # the first sequence the stream can deliver now
    stream: dict[str, Any] | None  # the identity the log follows
    found: dict[str, Any]  # the identity the stream has now

    def claims(self) -> dict[str, Any]:
        return {"reason": self.reason, "after": self.after, "next": self.next,
                "stream": self.stream, "found": self.found}  # fmt: skip


def inspect(followed: dict[str, Any] | None, last: int, info: StreamInfo) -> Found | None:
    """Compare the stream now with the log's position in it; None if continuous."""
    now = identity(info)
    if followed is not None and not same_stream(followed, now):
        return Found("reset", last, available_from(info), followed, now)
    if info.state.last_seq < last:
        # Same name and time but fewer messages than we wrote: the stream was rebuilt.
        return Found("reset", last, available_from(info), followed, now)
    start = available_from(info)
    if start > last + 1:
        return Found("gap", last, start, followed, now)
    return None
