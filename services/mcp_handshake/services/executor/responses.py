"""What a target's HTTP answer means: a result, a refusal, or when to call again."""

from __future__ import annotations

import email.utils
import time
from typing import Any

import msgspec

from mcp_handshake.shared.errors import TargetError

__all__ = ["result", "retry_after", "target_message"]


def retry_after(value: str | None) -> float | None:
    """RFC 9110 ``Retry-After``: delay seconds or an HTTP date; ``None`` if absent or bad."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - time.time())


def result(status: int, data: bytes, txn: str) -> Any:
    if status >= 400:
        raise TargetError(target_message(status, data), transaction_id=txn)
    if not data:
        return None
    try:
        return msgspec.json.decode(data)
    except msgspec.DecodeError:
        raise TargetError("the target API answered with something that is not JSON") from None


def target_message(status: int, data: bytes) -> str:
    """The target's status and, if it gave one, its short error code. Nothing else."""
    code = None
    try:
        body = msgspec.json.decode(data)
        err = body.get("error") if isinstance(body, dict) else None
        candidate = err.get("code") if isinstance(err, dict) else err
        if isinstance(candidate, str) and candidate.isidentifier() and len(candidate) <= 40:
            code = candidate
    except msgspec.DecodeError:
        pass
    suffix = f" ({code})" if code else ""
    return f"the target API refused the operation: HTTP {status}{suffix}"
