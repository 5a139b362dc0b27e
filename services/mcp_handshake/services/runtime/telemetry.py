"""OpenTelemetry set-up for a worker process, and the metrics it records.

Exporters come from the standard variables ``OTEL_TRACES_EXPORTER`` and
``OTEL_METRICS_EXPORTER`` (``none`` by default, ``console``, or ``otlp`` with
the ``otlp`` extra installed; the OTLP endpoint comes from the usual
``OTEL_EXPORTER_OTLP_*`` variables). With both ``none`` nothing is installed
and tracing costs nothing on the hot path.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from typing import Any

from opentelemetry import metrics, trace

from mcp_handshake.shared.settings import Settings

__all__ = ["Metrics", "setup_telemetry"]

log = logging.getLogger(__name__)


#: Exporter classes by signal and name: (module, class).
_EXPORTERS = {
    ("traces", "console"): ("opentelemetry.sdk.trace.export", "ConsoleSpanExporter"),
    ("traces", "otlp"): (
        "opentelemetry.exporter.otlp.proto.http.trace_exporter",
        "OTLPSpanExporter",
    ),
    ("metrics", "console"): ("opentelemetry.sdk.metrics.export", "ConsoleMetricExporter"),
    ("metrics", "otlp"): (
        "opentelemetry.exporter.otlp.proto.http.metric_exporter",
        "OTLPMetricExporter",
    ),
}


def _exporter(signal: str, name: str) -> Any:
    """The exporter ``OTEL_<SIGNAL>_EXPORTER`` names (imported only when asked for)."""
    found = _EXPORTERS.get((signal, name))
    if found is None:
        variable = f"OTEL_{signal.upper()}_EXPORTER"
        raise RuntimeError(f"unknown {variable} {name!r} (none, console, otlp)")
    try:
        module = importlib.import_module(found[0])
    except ImportError as exc:
        raise RuntimeError("OTLP export needs: pip install 'mcp-handshake[otlp]'") from exc
    return getattr(module, found[1])()


def setup_telemetry(settings: Settings, kind: str) -> Callable[[], None]:
    """Install providers per the settings; returns the shutdown (flush) function."""
    if settings.traces_exporter == "none" and settings.metrics_exporter == "none":
        return lambda: None
    from opentelemetry.sdk.resources import Resource

    resource = Resource.create({"service.name": f"handshake-{kind}"})
    shutdowns: list[Callable[[], Any]] = []
    if settings.traces_exporter != "none":
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        tp = TracerProvider(resource=resource)
        tp.add_span_processor(BatchSpanProcessor(_exporter("traces", settings.traces_exporter)))
        trace.set_tracer_provider(tp)
        shutdowns.append(tp.shutdown)
    if settings.metrics_exporter != "none":
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader

        reader = PeriodicExportingMetricReader(_exporter("metrics", settings.metrics_exporter))
        mp = MeterProvider(resource=resource, metric_readers=[reader])
        metrics.set_meter_provider(mp)
        shutdowns.append(mp.shutdown)

    def shutdown() -> None:
        for fn in shutdowns:
            try:
                fn()
            except Exception:
                log.warning("telemetry shutdown failed", exc_info=True)

    return shutdown


class Metrics:
    """The instruments every worker records (no-ops without a meter provider)."""

    def __init__(self, kind: str) -> None:
        meter = metrics.get_meter("mcp_handshake")
        self.kind = kind
        self.requests = meter.create_counter(
            "handshake.requests", description="Requests by worker kind, endpoint and outcome code"
        )
        self.duration = meter.create_histogram(
            "handshake.request.duration", unit="ms", description="Time to serve a request"
        )
        self.tokens = meter.create_counter(
            "handshake.tokens", description="Tokens issued and consumed"
        )
        self.drift = meter.create_counter(
            "handshake.catalog.drift",
            description="Calls refused because an upstream tool no longer matches its pin",
        )
        self.gauges: dict[str, float] = {}
        meter.create_observable_gauge(
            "handshake.approvals.pending",
            callbacks=[self._observe("approvals_pending")],
            description="Transactions waiting for a human decision",
        )
        meter.create_observable_gauge(
            "handshake.audit.lag",
            callbacks=[self._observe("audit_lag")],
            description="Audit events in the stream not yet in the log",
        )

    def _observe(self, name: str) -> Callable[[Any], list[Any]]:
        def callback(options: Any) -> list[Any]:
            if name not in self.gauges:
                return []
            return [metrics.Observation(self.gauges[name], {"worker": self.kind})]

        return callback

    def request(self, endpoint: str, outcome: str, ms: float) -> None:
        attrs = {"worker": self.kind, "endpoint": endpoint, "outcome": outcome}
        self.requests.add(1, attrs)
        self.duration.record(ms, {"worker": self.kind, "endpoint": endpoint})
