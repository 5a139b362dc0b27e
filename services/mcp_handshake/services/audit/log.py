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

import contextlib
import fcntl
import hashlib
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
import msgspec

from mcp_handshake.shared.hashing import canonical_json
from mcp_handshake.shared.keys import PrivateKey, algorithm_for, public_jwk

__all__ = ["AuditLogWriter", "VerifyResult", "read_entries", "verify_log"]

GENESIS = "0" * 64
CHECKPOINT_TYP = "handshake-audit-checkpoint+jws"


_H_PREFIX = b',"h":"'
_SUFFIX_LEN = len(_H_PREFIX) + 64 + 2  # ,"h":"<64 hex>"}


def _line(seq: int, prev: str, kind: str, body: Any) -> tuple[bytes, str]:
    core = msgspec.json.encode({"seq": seq, "prev": prev, "kind": kind, "body": body})
    h = hashlib.sha256(core).hexdigest()
    return core[:-1] + _H_PREFIX + h.encode() + b'"}\n', h


def _split(raw: bytes) -> tuple[bytes, str] | None:
    """(the hashed bytes, the stated hash) of a line, if it has the shape we write."""
    line = raw.rstrip(b"\n")
    if len(line) <= _SUFFIX_LEN or not line.endswith(b'"}'):
        return None
    if line[-_SUFFIX_LEN : -_SUFFIX_LEN + len(_H_PREFIX)] != _H_PREFIX:
        return None
    return line[:-_SUFFIX_LEN] + b"}", line[-66:-2].decode("ascii", "replace")


def side_file(log: Path) -> Path:
    return log.with_name(log.name + ".checkpoints")


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
        line, h = _line(self._tail.seq + 1, self._tail.h, "event", body)
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
        line, h = _line(seq, prev, "checkpoint", {**claims, "sig": sig})
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


def read_entries(path: Path) -> Iterator[dict[str, Any]]:
    """The log's complete lines as objects (no verification)."""
    if not path.exists():
        return
    with open(path, "rb") as fh:
        for raw in fh:
            if raw.endswith(b"\n") and raw.strip():
                yield json.loads(raw)


@dataclass(frozen=True)
class VerifyResult:
    ok: bool
    entries: int
    checkpoints: int
    #: 1-based line of the first problem, and what it is.
    bad_line: int | None = None
    reason: str = ""


def _check_signature(claims: dict[str, Any], sig: str, keys: dict[str, jwt.PyJWK]) -> bool:
    try:
        kid = jwt.get_unverified_header(sig).get("kid", "")
        key = keys.get(kid)
        if key is None:
            return False
        decoded = jwt.api_jws.decode_complete(
            sig, key.key, algorithms=[key.algorithm_name], detached_payload=None
        )
    except jwt.PyJWTError:
        return False
    return bool(decoded["payload"] == canonical_json(claims))


def verify_log(path: Path, jwks: dict[str, Any]) -> VerifyResult:
    """Check the whole chain, every checkpoint signature, and the side file of checkpoints."""
    keys = {k["kid"]: jwt.PyJWK(k) for k in jwks.get("keys", [])}
    prev, entries = GENESIS, 0
    checkpoints: dict[int, dict[str, Any]] = {}
    line_no = 0
    # The side file first: the writer puts a checkpoint in the log before the side
    # file, so everything read here is already in the log even while it grows.
    side = side_file(path)
    side_text = side.read_text() if side.exists() else None
    with contextlib.ExitStack() as stack:
        if not path.exists():
            return VerifyResult(False, 0, 0, 1, "log file missing")
        fh = stack.enter_context(open(path, "rb"))
        for n, raw in enumerate(fh, start=1):
            if not raw.endswith(b"\n"):
                break  # a line being written right now (only ever the last one)
            line_no = n
            bad = _check_line(raw, line_no, prev, keys)
            if isinstance(bad, str):
                return VerifyResult(False, entries, len(checkpoints), line_no, bad)
            record = bad
            prev = record["h"]
            if record["kind"] == "checkpoint":
                checkpoints[record["seq"]] = record["body"]
            else:
                entries += 1
    problem = _check_side_file(side_text, line_no, checkpoints, keys)
    if problem is not None:
        return VerifyResult(False, entries, len(checkpoints), problem[0], problem[1])
    return VerifyResult(True, entries, len(checkpoints))


def _check_side_file(
    side: str | None, lines: int, inline: dict[int, dict[str, Any]], keys: dict[str, jwt.PyJWK]
) -> tuple[int | None, str] | None:
    """Every signed checkpoint in the side file must be in the log, as signed."""
    if side is None:
        return None
    for n, raw in enumerate(side.splitlines(), start=1):
        try:
            cp = json.loads(raw)
            claims = {"seq": cp["seq"], "prev": cp["prev"], "at": cp["at"]}
        except (ValueError, KeyError, TypeError):
            return None, f"checkpoint file line {n} unreadable"
        if not _check_signature(claims, cp.get("sig", ""), keys):
            return None, f"checkpoint file line {n}: bad signature"
        if cp["seq"] > lines:
            return lines + 1, f"log truncated: the checkpoint at line {cp['seq']} is missing"
        found = inline.get(cp["seq"])
        if found is None or found.get("prev") != cp["prev"]:
            return cp["seq"], "line does not match the signed checkpoint"
    return None


def _check_line(
    raw: bytes, line_no: int, prev: str, keys: dict[str, jwt.PyJWK]
) -> dict[str, Any] | str:
    """The parsed, verified record, or why it is bad."""
    parts = _split(raw)
    try:
        record = json.loads(raw)
        fields = {k: record[k] for k in ("seq", "prev", "kind", "body")}
        h = record["h"]
    except (ValueError, KeyError, TypeError):
        return "not a log record"
    if parts is None or set(record) != {"seq", "prev", "kind", "body", "h"} or parts[1] != h:
        return "not a log record"
    if fields["seq"] != line_no:
        return f"out of place (seq {fields['seq']})"
    if fields["prev"] != prev:
        return "chain broken (previous hash does not match)"
    if hashlib.sha256(parts[0]).hexdigest() != h:
        return "content does not match its hash"
    if fields["kind"] == "checkpoint":
        body = fields["body"]
        claims = {"seq": body.get("seq"), "prev": body.get("prev"), "at": body.get("at")}
        if claims["seq"] != line_no or claims["prev"] != prev:
            return "checkpoint does not cover its position"
        if not _check_signature(claims, body.get("sig", ""), keys):
            return "checkpoint signature invalid"
    elif fields["kind"] != "event":
        return "unknown record kind"
    verified: dict[str, Any] = record
    return verified
