"""The append-only, hash-chained, checkpoint-signed audit log.

One JSON object per line. Every line carries its position (``seq``, from 1),
the hash of the line before it (``prev``) and, as its last member, its own
hash (``h``: SHA-256 of the exact bytes of the line without that member), so
an edited, deleted, inserted or reordered line breaks the chain. Hashing the
bytes as written, rather than a canonical form, keeps the writer cheap; the
verifier reads the file in binary, so not even a line ending can change
unnoticed. Every N entries or T seconds, and when the
writer stops, a checkpoint line carries an Ed25519 signature (audit key) over
its ``seq`` and ``prev``; checkpoints are also appended to a side file (and
published off-host, see ``checkpoints``), so a truncated log is caught by a
checkpoint it no longer reaches. Lines are fsynced before the events they
hold are acknowledged to the stream.

Continuity: the first line names the stream the log follows (``stream``),
and every event must carry the next stream sequence. Anything else (the
stream re-created, messages aged out or deleted) makes the writer append a
signed ``gap`` record and stop; it writes again only after an operator's
signed ``accept`` (``mcp-handshake audit resume --accept-gap``). A group message
(``runtime.audit_group``) is one line per event, each with the group's stream
sequence and its place in the group (``part``).

Exactly one writer per log: the writer holds an exclusive lock on
``<log>.lock``; a second audit worker waits as a standby and takes over when
the lock is released (the kernel releases it when the holder dies).
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mcp_handshake.services.audit.chain import (
    CHECKPOINT_TYP,
    GENESIS,
    SIGNED_TYP,
    Signer,
    hashed_line,
    read_entries,
    side_file,
)
from mcp_handshake.services.audit.continuity import Found
from mcp_handshake.shared.keys import PrivateKey

__all__ = ["AuditLogWriter"]


@dataclass
class _Tail:
    seq: int = 0
    h: str = GENESIS
    last_stream_seq: int = 0
    since_checkpoint: int = 0
    #: The identity of the stream the log follows (None: no header yet).
    stream: dict[str, Any] | None = None
    #: The claims of a gap not yet accepted (the writer is halted).
    gap: dict[str, Any] | None = None
    gap_line: int = 0
    #: A group message cut short by a crash: (its lines written, its events), for the
    #: message after ``last_stream_seq``.
    part: tuple[int, int] | None = None
    checkpoints: list[dict[str, Any]] = field(default_factory=list)


class AuditLogWriter:
    def __init__(
        self,
        path: Path,
        key: PrivateKey,
        *,
        checkpoint_every: int = 500,
        checkpoint_s: float = 5.0,
    ) -> None:
        self.path = path
        self._signer = Signer(key)
        self._every = checkpoint_every
        self._interval = checkpoint_s
        self._tail = _Tail()
        self._lock_fd: int | None = None
        self._fh: Any = None
        self._side: Any = None
        self._last_checkpoint = time.monotonic()
        self.written = 0
        #: Signed checkpoints not yet known to be published off-host (oldest first).
        self.unpublished: list[dict[str, Any]] = []

    # -- ownership -------------------------------------------------------------

    def try_lock(self) -> bool:
        """Take the writer's lock if it is free (never blocks)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path.with_name(self.path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self._lock_fd = fd
        return True

    def open(self) -> None:
        """Resume after the last line already written (by us or a previous writer).

        A last line cut short by a crash was never synced, so never acknowledged
        as written: it is removed, and its event is read from the stream again.
        """
        assert self._lock_fd is not None, "take the lock first"
        _drop_partial_tail(self.path)
        tail = self._tail
        for entry in read_entries(self.path):
            _replay(tail, entry)
        side = side_file(self.path)
        on_side = _read_side(side)
        self._side = open(side, "a", encoding="utf-8")
        # A crash between the log's checkpoint line and the side file's copy leaves
        # the newest one out; only that one is restored (more missing is tampering).
        if tail.checkpoints and (not on_side or on_side[-1]["seq"] < tail.checkpoints[-1]["seq"]):
            if len(on_side) == len(tail.checkpoints) - 1:
                self._write_side(tail.checkpoints[-1])
                on_side.append(tail.checkpoints[-1])
        self.unpublished = list(on_side)
        self._fh = open(self.path, "ab")

    @property
    def last_stream_seq(self) -> int:
        return self._tail.last_stream_seq

    @property
    def stream(self) -> dict[str, Any] | None:
        return self._tail.stream

    @property
    def gap(self) -> dict[str, Any] | None:
        """The open gap's claims while the writer is halted, else None."""
        return self._tail.gap

    # -- writing ---------------------------------------------------------------

    def _line(self, kind: str, body: Any) -> None:
        line, h = hashed_line(self._tail.seq + 1, self._tail.h, kind, body)
        self._fh.write(line)
        self._tail.seq, self._tail.h = self._tail.seq + 1, h
        self._tail.since_checkpoint += 1

    def begin(self, stream: dict[str, Any]) -> None:
        """Name the stream this log follows: a new log from sequence 1; a log written
        before logs named their stream, from the sequence after its last event."""
        assert self._tail.stream is None, "a log names its stream once"
        self._line("stream", {**stream, "start": self._tail.last_stream_seq + 1})
        self._tail.stream = stream
        self.sync(force=True)

    def append(self, stream_seq: int, event: Any) -> bool:
        """Append the event at ``stream_seq`` if it is the next one; True if written.

        A sequence already written is a redelivery (ignored). Any other, or a halted
        writer, writes nothing: the caller must check continuity and :meth:`halt`.
        """
        tail = self._tail
        if tail.gap is not None or stream_seq != tail.last_stream_seq + 1 or tail.part:
            return False
        self._line("event", {"sseq": stream_seq, "event": event})
        tail.last_stream_seq = stream_seq
        self.written += 1
        return True

    def append_group(self, stream_seq: int, events: list[Any]) -> bool:
        """:meth:`append` for a group message: one line per event, in order, each body
        also holding ``part``: [the event's index, the group's size]. A group cut short
        by a crash goes on from its first event not written."""
        tail = self._tail
        done, size = tail.part or (0, len(events))
        if tail.gap is not None or stream_seq != tail.last_stream_seq + 1 or size != len(events):
            return False
        for i in range(done, size):
            self._line("event", {"sseq": stream_seq, "part": [i, size], "event": events[i]})
            self.written += 1
        tail.last_stream_seq, tail.part = stream_seq, None
        return True

    def halt(self, found: Found) -> dict[str, Any]:
        """Record a discontinuity as a signed gap record (and a checkpoint); stop writing."""
        claims = {**found.claims(), "at": round(time.time(), 3)}
        self._line("gap", {**claims, "sig": self._signer.sign(claims, SIGNED_TYP)})
        self._tail.gap, self._tail.gap_line = claims, self._tail.seq
        self.sync(force=True)
        return claims

    def accept(self, by: str, note: str, stream: dict[str, Any], resume: int) -> dict[str, Any]:
        """An operator's acceptance of the open gap: follow ``stream`` from ``resume``."""
        assert self._tail.gap is not None, "nothing to accept"
        claims = {"gap_line": self._tail.gap_line, "by": by, "note": note,
                  "stream": stream, "resume": resume, "at": round(time.time(), 3)}  # fmt: skip
        self._line("accept", {**claims, "sig": self._signer.sign(claims, SIGNED_TYP)})
        self._tail.stream, self._tail.last_stream_seq = stream, resume - 1
        self._tail.gap, self._tail.part = None, None
        self.sync(force=True)
        return claims

    def sync(self, force: bool = False) -> None:
        """Make what was appended durable; checkpoint when due (or now, with ``force``)."""
        self._fh.flush()
        os.fsync(self._fh.fileno())
        due = time.monotonic() - self._last_checkpoint >= self._interval
        pending = self._tail.since_checkpoint
        if pending and (force or due or pending >= self._every):
            self.checkpoint()

    def checkpoint(self) -> None:
        seq, prev, at = self._tail.seq + 1, self._tail.h, round(time.time(), 3)
        claims = {"seq": seq, "prev": prev, "at": at}
        body = {**claims, "sig": self._signer.sign(claims, CHECKPOINT_TYP)}
        line, h = hashed_line(seq, prev, "checkpoint", body)
        self._fh.write(line)
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self._write_side(body)
        self._tail.seq, self._tail.h, self._tail.since_checkpoint = seq, h, 0
        self._tail.checkpoints.append(body)
        self.unpublished.append(body)
        self._last_checkpoint = time.monotonic()

    def _write_side(self, body: dict[str, Any]) -> None:
        self._side.write(json.dumps(body) + "\n")
        self._side.flush()
        os.fsync(self._side.fileno())

    def close(self) -> None:
        if self._fh is not None:
            if self._tail.since_checkpoint:
                self.checkpoint()
            self._fh.close()
            self._side.close()
            self._fh = self._side = None
        if self._lock_fd is not None:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)
            self._lock_fd = None


def _replay(tail: _Tail, entry: dict[str, Any]) -> None:
    """Bring ``tail`` past one line already in the log."""
    tail.seq, tail.h = entry["seq"], entry["h"]
    kind, body = entry["kind"], entry["body"]
    tail.since_checkpoint += 1
    if kind == "event":
        part = body.get("part")
        if part and part[0] + 1 < part[1]:  # a group not yet complete
            tail.last_stream_seq, tail.part = body["sseq"] - 1, (part[0] + 1, part[1])
        else:
            tail.last_stream_seq, tail.part = max(tail.last_stream_seq, body["sseq"]), None
    elif kind == "checkpoint":
        tail.since_checkpoint = 0
        tail.checkpoints.append(body)
    elif kind == "stream":
        tail.stream = {k: v for k, v in body.items() if k != "start"}
    elif kind == "gap":
        tail.gap = {k: v for k, v in body.items() if k != "sig"}
        tail.gap_line = entry["seq"]
    elif kind == "accept":
        tail.stream, tail.last_stream_seq = body["stream"], body["resume"] - 1
        tail.gap, tail.part = None, None


def _read_side(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    out = []
    for raw in path.read_text().splitlines():
        try:
            out.append(json.loads(raw))
        except ValueError:
            break
    return out


def _drop_partial_tail(path: Path) -> None:
    if not path.exists():
        return
    data = path.read_bytes()
    if not data or data.endswith(b"\n"):
        return
    keep = data.rfind(b"\n") + 1
    with open(path, "r+b") as fh:
        fh.truncate(keep)
        fh.flush()
        os.fsync(fh.fileno())
