"""Reading and verifying the audit log: ``mcp-handshake audit verify`` and ``show``."""

from __future__ import annotations

import contextlib
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt

from mcp_handshake.services.audit.chain import GENESIS, side_file, split_line
from mcp_handshake.shared.hashing import canonical_json

__all__ = ["VerifyResult", "verify_log"]


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
    parts = split_line(raw)
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
