"""The append-only, hash-chained, checkpoint-signed audit log.

One JSON object per line. Every line carries its position (``seq``, from 1),
the hash of the line before it (``prev``) and, as its last member, its own
hash (``h``: SHA-256 of the exact bytes of the line without that member), so
an edited, deleted, inserted or reordered line breaks the chain. Hashing the
bytes as written, rather than a canonical form, keeps the writer cheap; the
verifier reads the file in binary, so not even a line ending can change
unnoticed. Every N entries or T seconds, and when the
writer stops, a checkpoint line carries an Ed25519 signature (audit key) over
its ``seq`` and ``prev``; checkpoints are also appended to a side file, so a
truncated log is caught by a checkpoint it no longer reaches. Lines are
fsynced before the events they hold are acknowledged to the stream.

Exactly one writer per log: the writer holds an exclusive lock on
``<log>.lock``; a second audit worker waits as a standby and takes over when
the lock is released (the kernel releases it when the holder dies).
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt

from mcp_handshake.services.audit.chain import (
    CHECKPOINT_TYP,
    GENESIS,
    hashed_line,
    read_entries,
    side_file,
)
from mcp_handshake.shared.hashing import canonical_json
from mcp_handshake.shared.keys import PrivateKey, algorithm_for, public_jwk

__all__ = ["AuditLogWriter"]


@dataclass
class _Tail:
    seq: int = 0
    h: str = GENESIS
    last_stream_seq: int = 0
    since_checkpoint: int = 0


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
        self._key = key
        self._alg = algorithm_for(key)
        self._kid = public_jwk(key)["kid"]
        self._every = checkpoint_every
        self._interval = checkpoint_s
        self._tail = _Tail()
        self._lock_fd: int | None = None
        self._fh: Any = None
        self._side: Any = None
        self._last_checkpoint = time.monotonic()
        self.written = 0

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
        for entry in read_entries(self.path):
            self._tail.seq, self._tail.h = entry["seq"], entry["h"]
            if entry["kind"] == "event":
                self._tail.last_stream_seq = max(self._tail.last_stream_seq, entry["body"]["sseq"])
                self._tail.since_checkpoint += 1
            else:
                self._tail.since_checkpoint = 0
        self._fh = open(self.path, "ab")
        self._side = open(side_file(self.path), "a", encoding="utf-8")

    @property
    def last_stream_seq(self) -> int:
        return self._tail.last_stream_seq

    # -- writing ---------------------------------------------------------------

    def append(self, stream_seq: int, event: Any) -> bool:
        """Append one event unless it was already written (a redelivery); True if written."""
        if stream_seq <= self._tail.last_stream_seq:
            return False
        body = {"sseq": stream_seq, "event": event}
        line, h = hashed_line(self._tail.seq + 1, self._tail.h, "event", body)
        self._fh.write(line)
        self._tail = _Tail(self._tail.seq + 1, h, stream_seq, self._tail.since_checkpoint + 1)
        self.written += 1
        return True

    def sync(self) -> None:
        """Make what was appended durable; checkpoint when due."""
        self._fh.flush()
        os.fsync(self._fh.fileno())
        due = time.monotonic() - self._last_checkpoint >= self._interval
        if self._tail.since_checkpoint >= self._every or (due and self._tail.since_checkpoint):
            self.checkpoint()

    def checkpoint(self) -> None:
        seq, prev, at = self._tail.seq + 1, self._tail.h, round(time.time(), 3)
        claims = {"seq": seq, "prev": prev, "at": at}
        sig = jwt.api_jws.encode(
            canonical_json(claims), self._key, self._alg, {"typ": CHECKPOINT_TYP, "kid": self._kid}
        )
        line, h = hashed_line(seq, prev, "checkpoint", {**claims, "sig": sig})
        self._fh.write(line)
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self._side.write(json.dumps({**claims, "sig": sig}) + "\n")
        self._side.flush()
        os.fsync(self._side.fileno())
        self._tail = _Tail(seq, h, self._tail.last_stream_seq, 0)
        self._last_checkpoint = time.monotonic()

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
