"""Trace context across NATS hops (W3C ``traceparent`` in message headers).

Spans follow the OpenTelemetry messaging conventions: ``send <subject>`` on
the requesting side, ``process <subject>`` on the serving side, with
``messaging.system = "nats"`` and the subject as destination; reply inboxes
never appear in names. Only the OpenTelemetry API is used here: with no SDK
configured every call is a no-op, and the hot path skips even that.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

__all__ = [
    "enabled",
    "inject",
    "process_span",
    "send_span",
    "span",
    "trace_id",
]

_tracer = trace.get_tracer("mcp_handshake")

# Without an SDK we still pass an incoming ``traceparent`` on to the next hop and
# read its trace id for log lines, so logs correlate across workers for free.
_incoming: ContextVar[str | None] = ContextVar("handshake_traceparent", default=None)


def enabled() -> bool:
    """Whether a real tracer provider is installed (else skip all tracing work)."""
    return not isinstance(
        trace.get_tracer_provider(), trace.ProxyTracerProvider | trace.NoOpTracerProvider
    )


def _messaging(subject: str, operation: str) -> dict[str, Any]:
    return {
        "messaging.system": "nats",
        "messaging.destination.name": subject,
        "messaging.operation.type": operation,
        "messaging.operation.name": operation,
    }


@contextlib.contextmanager
def send_span(subject: str, **attributes: Any) -> Iterator[Span | None]:
    """A span around a request to ``subject`` (its context goes into the headers)."""
    if not enabled():
        yield None
        return
    with _tracer.start_as_current_span(
        f"send {subject}", kind=SpanKind.CLIENT, attributes={**_messaging(subject, "send"),
                                                              **attributes},
    ) as s:  # fmt: skip
        yield s


@contextlib.contextmanager
def process_span(
    subject: str, headers: Mapping[str, str] | None, **attributes: Any
) -> Iterator[Span | None]:
    """A span around serving a request, continuing the trace its headers carry."""
    if not enabled():
        _incoming.set((headers or {}).get("traceparent"))
        yield None
        return
    parent = propagate.extract(dict(headers or {}))
    token = otel_context.attach(parent)
    try:
        with _tracer.start_as_current_span(
            f"process {subject}", kind=SpanKind.SERVER,
            attributes={**_messaging(subject, "process"), **attributes},
        ) as s:  # fmt: skip
            yield s
    finally:
        otel_context.detach(token)


@contextlib.contextmanager
def span(
    name: str, kind: SpanKind = SpanKind.INTERNAL, attributes: dict[str, Any] | None = None
) -> Iterator[Span | None]:
    if not enabled():
        yield None
        return
    with _tracer.start_as_current_span(name, kind=kind, attributes=attributes or {}) as s:
        yield s


def inject(headers: dict[str, str]) -> dict[str, str]:
    """Add ``traceparent``/``tracestate`` for the current span (no-op when tracing is off)."""
    if enabled():
        propagate.inject(headers)
    else:
        incoming = _incoming.get()
        if incoming:
            headers["traceparent"] = incoming
    return headers


def trace_id() -> str | None:
    """The current trace id (hex), from the active span or the incoming ``traceparent``."""
    ctx = trace.get_current_span().get_span_context()
    if ctx.is_valid:
        return format(ctx.trace_id, "032x")
    parts = (_incoming.get() or "").split("-")
    if len(parts) == 4 and len(parts[1]) == 32 and parts[1] != "0" * 32:
        return parts[1]
    return None


def set_error(s: Span | None, code: str) -> None:
    if s is not None:
        s.set_attribute("handshake.outcome", code)
        if code != "ok":
            s.set_status(Status(StatusCode.ERROR, code))
