"""Checkpoint copies: the side file beside the log, and those published off-host.

Both must agree with the log: every checkpoint the log holds is in the side
file, in order and as signed, and nothing more; every checkpoint published to
``HANDSHAKE_CHECKPOINTS`` is in the log. A checkpoint copy the log no longer
reaches means the log was cut.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jwt

from mcp_handshake.services.audit.chain import check_signature

__all__ = ["check_side_file", "cross_check", "read_side"]

Problem = tuple[int | None, str]


def read_side(path: Path) -> str | None:
    return path.read_text() if path.exists() else None


def _copy_problem(cp: Any, where: str, lines: int, inline: dict[int, dict[str, Any]],
                  keys: dict[str, jwt.PyJWK]) -> Problem | None:  # fmt: skip
    """What is wrong with one signed copy of a checkpoint, judged against the log."""
    try:
        claims = {"seq": cp["seq"], "prev": cp["prev"], "at": cp["at"]}
    except (KeyError, TypeError):
        return None, f"{where} unreadable"
    if not check_signature(claims, cp.get("sig", ""), keys):
        return None, f"{where}: bad signature"
    if not isinstance(claims["seq"], int) or claims["seq"] > lines:
        return lines + 1, (f"log truncated: it ends at line {lines}, but {where} is a signed "
                           f"checkpoint at line {claims['seq']}")  # fmt: skip
    found = inline.get(claims["seq"])
    if found is None or found.get("prev") != cp["prev"] or found.get("sig") != cp.get("sig"):
        return claims["seq"], f"line does not match the signed checkpoint in {where}"
    return None


def check_side_file(
    side: str | None, lines: int, inline: dict[int, dict[str, Any]], keys: dict[str, jwt.PyJWK]
) -> Problem | None:
    """The side file must hold exactly the log's checkpoints, in order."""
    if side is None:
        if inline:
            return None, f"checkpoint file missing, but the log holds {len(inline)} checkpoints"
        return None
    seen: list[int] = []
    for n, raw in enumerate(side.splitlines(), start=1):
        try:
            cp = json.loads(raw)
        except ValueError:
            return None, f"checkpoint file line {n} unreadable"
        problem = _copy_problem(cp, f"checkpoint file line {n}", lines, inline, keys)
        if problem is not None:
            return problem
        if seen and cp["seq"] <= seen[-1]:
            return None, f"checkpoint file line {n}: out of order or repeated"
        seen.append(cp["seq"])
    missing = sorted(set(inline) - set(seen))
    if missing:
        listed = ", ".join(str(m) for m in missing[:5]) + (" ..." if len(missing) > 5 else "")
        return missing[0], (f"checkpoint file trimmed or inconsistent: it lacks the log's "
                            f"checkpoints at lines {listed}")  # fmt: skip
    return None


def cross_check(
    published: list[dict[str, Any]],
    lines: int,
    inline: dict[int, dict[str, Any]],
    keys: dict[str, jwt.PyJWK],
) -> Problem | None:
    """Every checkpoint published off-host must be in the log, as signed."""
    for n, cp in enumerate(published, start=1):
        problem = _copy_problem(cp, f"published checkpoint {n}", lines, inline, keys)
        if problem is not None:
            return problem
    return None
