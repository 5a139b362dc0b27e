"""The audit log's line format: hash-chained JSON lines (see ``log``)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec

__all__ = ["CHECKPOINT_TYP", "GENESIS", "hashed_line", "read_entries", "side_file", "split_line"]

GENESIS = "0" * 64
CHECKPOINT_TYP = "handshake-audit-checkpoint+jws"


_H_PREFIX = b',"h":"'
_SUFFIX_LEN = len(_H_PREFIX) + 64 + 2  # ,"h":"<64 hex>"}


def hashed_line(seq: int, prev: str, kind: str, body: Any) -> tuple[bytes, str]:
    core = msgspec.json.encode({"seq": seq, "prev": prev, "kind": kind, "body": body})
    h = hashlib.sha256(core).hexdigest()
    return core[:-1] + _H_PREFIX + h.encode() + b'"}\n', h


def split_line(raw: bytes) -> tuple[bytes, str] | None:
    """(the hashed bytes, the stated hash) of a line, if it has the shape we write."""
    line = raw.rstrip(b"\n")
    if len(line) <= _SUFFIX_LEN or not line.endswith(b'"}'):
        return None
    if line[-_SUFFIX_LEN : -_SUFFIX_LEN + len(_H_PREFIX)] != _H_PREFIX:
        return None
    return line[:-_SUFFIX_LEN] + b"}", line[-66:-2].decode("ascii", "replace")


def side_file(log: Path) -> Path:
    return log.with_name(log.name + ".checkpoints")


def read_entries(path: Path) -> Iterator[dict[str, Any]]:
    """The log's complete lines as objects (no verification)."""
    if not path.exists():
        return
    with open(path, "rb") as fh:
        for raw in fh:
            if raw.endswith(b"\n") and raw.strip():
                yield json.loads(raw)
