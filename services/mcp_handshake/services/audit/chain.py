"""The audit log's line format: hash-chained JSON lines (see ``log``).

Record kinds: ``stream`` (the first line: the identity of the stream the log
follows), ``event`` (one stream message), ``checkpoint`` (signed seal over the
chain so far), ``gap`` (signed: the writer found the stream reset or a hole
in its sequence and stopped) and ``accept`` (signed: an operator accepted the
gap before it; the log follows the stream identity it names from there).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import msgspec

from mcp_handshake.shared.hashing import canonical_json
from mcp_handshake.shared.keys import PrivateKey, algorithm_for, public_jwk

__all__ = ["CHECKPOINT_TYP", "GENESIS", "KINDS", "SIGNED_TYP", "Signer", "check_signature",
           "hashed_line", "read_entries", "side_file", "split_line"]  # fmt: skip

GENESIS = "0" * 64
CHECKPOINT_TYP = "handshake-audit-checkpoint+jws"
#: The ``typ`` of signed gap and accept records.
SIGNED_TYP = "handshake-audit-continuity+jws"
KINDS = frozenset({"stream", "event", "checkpoint", "gap", "accept"})


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


class Signer:
    """Detached-payload-free compact JWS over canonical JSON claims, by the audit key."""

    def __init__(self, key: PrivateKey) -> None:
        self._key = key
        self._alg = algorithm_for(key)
        self.kid = public_jwk(key)["kid"]

    def sign(self, claims: dict[str, Any], typ: str) -> str:
        header = {"typ": typ, "kid": self.kid}
        return jwt.api_jws.encode(canonical_json(claims), self._key, self._alg, header)


def check_signature(claims: dict[str, Any], sig: str, keys: dict[str, jwt.PyJWK]) -> bool:
    """True if ``sig`` is a valid signature over exactly ``claims`` by one of ``keys``."""
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
