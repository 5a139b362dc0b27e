"""Per-request context: what a handler learned, for audit events and log lines.

The endpoint wrapper opens one context per request; handlers fill in what
they learn (caller, tool, transaction id, tier, params hash) and never catch
errors to report them. When the handler returns or raises, the wrapper hands
the context and the outcome code to the worker's audit hook. Log records read
the transaction id from here.
"""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

__all__ = ["RequestContext", "current", "open_context"]


@dataclass(slots=True)
class RequestContext:
    endpoint: str
    txn: str | None = None
    sub: str | None = None
    tool: str | None = None
    tier: str | None = None
    ph: str | None = None
    #: Result hash (execute) and approval details, when known.
    rh: str | None = None
    status: str | None = None
    #: Set once the execute intent is durably recorded: failures after it are
    #: ``execute.failed``, before it ``execute.denied``.
    intent_recorded: bool = False
    extra: dict[str, Any] = field(default_factory=dict)
    trace_id: str | None = None


_current: ContextVar[RequestContext | None] = ContextVar("handshake_request", default=None)


def open_context(endpoint: str) -> RequestContext:
    ctx = RequestContext(endpoint)
    _current.set(ctx)
    return ctx


def current() -> RequestContext:
    """The running request's context (a throwaway one outside requests)."""
    ctx = _current.get()
    if ctx is None:
        ctx = RequestContext("-")
        _current.set(ctx)
    return ctx
