"""Reading and verifying the audit log: ``mcp-handshake audit verify`` and ``show``.

Verification needs only the audit key's public JWKS. It checks the chain
(every line), every signature (checkpoints, gaps, acceptances), continuity
(every event carries the next stream sequence of the stream the log names, the
events of a group message each its own line, in order, with the group's sequence; a
gap is reported, and is a failure unless an operator's signed acceptance
follows it), and the checkpoint side file (it must list exactly the log's
checkpoints). :func:`cross_check` compares the log with the checkpoints
published off-host.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt

from mcp_handshake.services.audit.chain import GENESIS, KINDS, check_signature, side_file
from mcp_handshake.services.audit.chain import split_line as _split
from mcp_handshake.services.audit.sidecheck import check_side_file, cross_check, read_side

__all__ = ["VerifyResult", "cross_check", "describe_gap", "verify_log"]


@dataclass(frozen=True)
class VerifyResult:
    ok: bool
    entries: int
    checkpoints: int
    #: 1-based line of the first problem (None: not a line's), and what it is.
    bad_line: int | None = None
    reason: str = ""
    #: Every gap in the log: its claims, its line, and who accepted it (if anyone).
    gaps: tuple[dict[str, Any], ...] = ()
    #: Complete lines read, and the log's checkpoints by line, for :func:`cross_check`.
    lines: int = 0
    inline: dict[int, dict[str, Any]] = field(default_factory=dict, repr=False)


@dataclass
class _Walk:
    prev: str = GENESIS
    entries: int = 0
    line: int = 0
    stream: dict[str, Any] | None = None
    last: int = 0
    #: Inside a group message's lines: (the next index, the group's size).
    part: tuple[int, int] | None = None
    open_gap: dict[str, Any] | None = None
    gaps: list[dict[str, Any]] = field(default_factory=list)
    inline: dict[int, dict[str, Any]] = field(default_factory=dict)

    def result(self, ok: bool, bad: int | None = None, reason: str = "") -> VerifyResult:
        return VerifyResult(ok, self.entries, len(self.inline), bad, reason,
                            tuple(self.gaps), self.line, self.inline)  # fmt: skip


def verify_log(path: Path, jwks: dict[str, Any], *, settle_s: float = 0.5) -> VerifyResult:
    """Check the whole chain, every signature, continuity, and the side file of checkpoints."""
    keys = {k["kid"]: jwt.PyJWK(k) for k in jwks.get("keys", [])}
    walk = _Walk()
    with contextlib.ExitStack() as stack:
        if not path.exists():
            return walk.result(False, 1, "log file missing")
        fh = stack.enter_context(open(path, "rb"))
        for n, raw in enumerate(fh, start=1):
            if not raw.endswith(b"\n"):
                break  # a line being written right now (only ever the last one)
            walk.line = n
            record = _check_line(raw, n, walk.prev, keys)
            if isinstance(record, str):
                return walk.result(False, n, record)
            walk.prev = record["h"]
            problem = _follow(walk, record)
            if problem is not None:
                return walk.result(False, n, problem)
    if walk.open_gap is not None:
        g = walk.open_gap
        return walk.result(False, g["line"], f"{describe_gap(g)}: not accepted (writer halted)")
    side = side_file(path)
    side_problem = check_side_file(read_side(side), walk.line, walk.inline, keys)
    if side_problem and side_problem[1].startswith("checkpoint file trimmed") and settle_s:
        time.sleep(settle_s)  # the writer may be between the log's line and the side file's
        side_problem = check_side_file(read_side(side), walk.line, walk.inline, keys)
    if side_problem is not None:
        return walk.result(False, side_problem[0], side_problem[1])
    return walk.result(True)


def describe_gap(gap: dict[str, Any]) -> str:
    """One line about a gap, for people."""
    after, nxt = gap.get("after", 0), gap.get("next", 0)
    if gap.get("reason") == "reset":
        return (f"stream reset at line {gap['line']}: after sequence {after} of the stream created "
                f"{(gap.get('stream') or {}).get('created')}, the stream was re-created "
                f"{(gap.get('found') or {}).get('created')}; events after {after} of the old "
                f"stream and before {nxt} of the new one are not in the log")  # fmt: skip
    return (f"gap at line {gap['line']}: stream sequences {after + 1}..{nxt - 1} "
            f"are not in the log")  # fmt: skip


def _follow(walk: _Walk, record: dict[str, Any]) -> str | None:
    """Advance the continuity state by one verified record; the problem, if any."""
    kind, body, seq = record["kind"], record["body"], record["seq"]
    if kind == "stream":
        # Logs name their stream on line 1; one written before that names it once,
        # after its older events, where the next event must continue.
        start = body.get("start", 1) if isinstance(body, dict) else None
        if type(start) is not int or walk.stream is not None or walk.gaps or start != walk.last + 1:
            return "a second or misplaced stream header"
        walk.stream = {k: v for k, v in body.items() if k != "start"}
        walk.last = start - 1
    elif kind == "event":
        walk.entries += 1
        if walk.open_gap is not None:
            return "an event written after an unaccepted gap"
        sseq = body.get("sseq") if isinstance(body, dict) else None
        if walk.stream is None and walk.last == 0 and isinstance(sseq, int):
            walk.last = sseq - 1  # an older log's first event, before any header
        if sseq != walk.last + 1:
            gap = {"reason": "gap", "after": walk.last, "next": sseq, "line": seq}
            return f"{describe_gap(gap)} and no gap was recorded"
        return _group_step(walk, body.get("part"), sseq)
    elif kind == "checkpoint":
        walk.inline[seq] = body
    elif kind == "gap":
        walk.part = None  # a group cut short by the gap: its rest is in the gap
        walk.open_gap = {k: v for k, v in body.items() if k != "sig"} | {"line": seq}
        walk.gaps.append(walk.open_gap)
    elif kind == "accept":
        open_gap = walk.open_gap
        if open_gap is None or body.get("gap_line") != open_gap["line"]:
            return "an acceptance of no open gap"
        open_gap["accepted"] = {k: body.get(k) for k in ("by", "at", "note", "resume")}
        walk.stream, walk.last, walk.open_gap = body["stream"], int(body["resume"]) - 1, None
    return None


def _group_step(walk: _Walk, part: Any, sseq: int) -> str | None:
    """Advance through an event line: a group message's lines (``part``: [index, size])
    come in order from index 0, and only its last one completes its stream sequence."""
    if part is None:
        if walk.part is not None:
            return "a group's events cut short"
        walk.last = sseq
        return None
    index, size = walk.part or (0, part[1] if _is_part(part) else 0)
    if not _is_part(part) or part != [index, size]:
        return "a group's events out of order"
    walk.part = (index + 1, size) if index + 1 < size else None
    if walk.part is None:
        walk.last = sseq
    return None


def _is_part(part: Any) -> bool:
    return (isinstance(part, list) and len(part) == 2 and all(type(p) is int for p in part)
            and 0 <= part[0] < part[1])  # fmt: skip


def _signed_claims(body: Any, kind: str) -> dict[str, Any]:
    if not isinstance(body, dict):
        return {}
    if kind == "checkpoint":
        return {"seq": body.get("seq"), "prev": body.get("prev"), "at": body.get("at")}
    return {k: v for k, v in body.items() if k != "sig"}


def _check_line(
    raw: bytes, line_no: int, prev: str, keys: dict[str, jwt.PyJWK]
) -> dict[str, Any] | str:
    """The parsed, verified record, or why it is bad."""
    parts = _split(raw)
    try:
        record = json.loads(raw)
        fields = {k: record[k] for k in ("seq", "prev", "kind", "body")}
        h = record["h"]
    except (ValueError, KeyError, TypeError, RecursionError):  # nested too deep to read
        return "not a log record"
    if parts is None or set(record) != {"seq", "prev", "kind", "body", "h"} or parts[1] != h:
        return "not a log record"
    if fields["seq"] != line_no:
        return f"out of place (seq {fields['seq']})"
    if fields["prev"] != prev:
        return "chain broken (previous hash does not match)"
    if hashlib.sha256(parts[0]).hexdigest() != h:
        return "content does not match its hash"
    kind, body = fields["kind"], fields["body"]
    if kind not in KINDS:
        return "unknown record kind"
    if kind in {"checkpoint", "gap", "accept"}:
        claims = _signed_claims(body, kind)
        if kind == "checkpoint" and (claims["seq"] != line_no or claims["prev"] != prev):
            return "checkpoint does not cover its position"
        if not check_signature(claims, body.get("sig", ""), keys):
            return f"{kind} signature invalid"
    verified: dict[str, Any] = record
    return verified
