"""Trace context across NATS hops (W3C ``traceparent`` in message headers).

Spans follow the OpenTelemetry messaging conventions: ``send <subject>`` on
the requesting side, ``process <subject>`` on the serving side, with
``messaging.system = "nats"`` and the subject as destination; reply inboxes
never appear in names. Only the OpenTelemetry API is used here: with no SDK
configured every call is a no-op, and the hot path skips even that.

An incoming ``traceparent`` comes from whoever sent the message, an agent
included, so it is checked against the W3C format (:func:`valid_traceparent`)
before it is used or passed on; an invalid one is dropped, with its
``tracestate``. Only these two headers are read: nothing else a sender puts in
its headers (``baggage`` included) travels on to executors or targets.
"""

from __future__ import annotations

import contextlib
import os
import re
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
    "valid_traceparent",
]

_tracer = trace.get_tracer("mcp_handshake")

# Without an SDK we still pass an incoming ``traceparent`` on to the next hop and
# read its trace id for log lines, so logs correlate across workers for free.
_incoming: ContextVar[str | None] = ContextVar("handshake_traceparent", default=None)

# version-traceid-parentid-flags, lowercase hex; later versions may append fields.
_TRACEPARENT = re.compile(
    r"(?P<version>[0-9a-f]{2})-(?P<trace_id>[0-9a-f]{32})-(?P<parent_id>[0-9a-f]{16})"
    r"-(?P<flags>[0-9a-f]{2})(?P<rest>-.*)?",
    re.DOTALL,
)
#: Longest ``traceparent`` accepted (later versions may be longer than version 00's 55).
_TRACEPARENT_MAX = 512


def valid_traceparent(value: str | None) -> str | None:
    """``value`` as a version-00 ``traceparent`` if it is a valid W3C one, else ``None``.

    Invalid: anything but lowercase hex fields of the right lengths, version ``ff``,
    an all-zero trace id or parent id, and a version-00 value with extra fields.
    A later version's first four fields are kept and passed on as version 00.
    """
    if not value or len(value) > _TRACEPARENT_MAX:
        return None
    m = _TRACEPARENT.fullmatch(value)
    if m is None:
        return None
    version, trace, parent, flags = m.group("version", "trace_id", "parent_id", "flags")
    if version == "ff" or (version == "00" and m.group("rest")):
        return None
    if trace == "0" * 32 or parent == "0" * 16:
        return None
    return value if version == "00" else f"00-{trace}-{parent}-{flags}"


def _trace_context(headers: Mapping[str, str] | None) -> dict[str, str]:
    """The incoming headers' trace context, validated: nothing else is read."""
    traceparent = valid_traceparent((headers or {}).get("traceparent"))
    if traceparent is None:
        return {}
    carrier = {"traceparent": traceparent}
    state = (headers or {}).get("tracestate")
    if state:
        carrier["tracestate"] = state
    return carrier


#: Whether a provider may come from the environment (else only ``set_tracer_provider``).
_PROVIDER_FROM_ENV = "OTEL_PYTHON_TRACER_PROVIDER" in os.environ


def enabled() -> bool:
    """Whether a real tracer provider is installed (else skip all tracing work).

    Called several times per request: while no provider is set it answers without
    ``get_tracer_provider``, which reads the environment on every call."""
    if getattr(trace, "_TRACER_PROVIDER", True) is None and not _PROVIDER_FROM_ENV:
        return False
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
        _incoming.set(valid_traceparent((headers or {}).get("traceparent")))
        yield None
        return
    parent = propagate.extract(_trace_context(headers))
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
    incoming = _incoming.get()  # valid, or None
    return incoming.split("-")[1] if incoming else None


def set_error(s: Span | None, code: str) -> None:
    if s is not None:
        s.set_attribute("handshake.outcome", code)
        if code != "ok":
            s.set_status(Status(StatusCode.ERROR, code))
