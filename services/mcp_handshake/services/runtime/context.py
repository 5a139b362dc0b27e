"""Log correlation: the running request's transaction id and trace id.

Only log lines read this. Audit facts never travel here: they come from the
reply a handler returns or the error it raises.
"""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass

__all__ = ["LogContext", "current", "log_txn", "open_log_context"]


@dataclass(slots=True)
class LogContext:
    txn: str | None = None
    trace_id: str | None = None


_current: ContextVar[LogContext | None] = ContextVar("handshake_log", default=None)


def open_log_context(txn: str | None, trace_id: str | None) -> LogContext:
    ctx = LogContext(txn, trace_id)
    _current.set(ctx)
    return ctx


def log_txn(txn: str) -> None:
    """Tag the running request's later log lines with a transaction id it just created."""
    ctx = _current.get()
    if ctx is not None:
        ctx.txn = txn


def current() -> LogContext | None:
    return _current.get()
