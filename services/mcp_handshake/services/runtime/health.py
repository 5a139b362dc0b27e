"""A worker's health port (``--health-port``): ``/healthz``, ``/readyz``, ``/metrics``.

- ``/healthz``: 200 while the event loop answers (a liveness probe).
- ``/readyz``: 200 once the worker has started (its keys and configuration loaded,
  its endpoints serving) while NATS is connected, the JetStream streams its kind
  uses exist, Redis answers ``PING`` (kinds that use it) and the audit outbox has
  room; otherwise 503 with ``{"ready": false, "reason": "..."}``.
- ``/metrics``: the Prometheus text exposition of what ``$SRV.STATS`` reports
  (requests per endpoint and outcome, errors, processing time), the worker's gauges
  (pending approvals, audit lag), the audit outbox and the NATS connection.

It listens on 127.0.0.1 unless told otherwise (``--health-host``): nothing in it
is secret, but nothing outside the pod needs it either.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Iterator
from typing import Any

from aiohttp import web
from nats.aio.client import Client as NATS
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from mcp_handshake.services.runtime.approvals import STREAM as APPROVALS
from mcp_handshake.services.runtime.audit import STREAM as AUDIT
from mcp_handshake.services.runtime.streams import StartupError

#: A started ``runtime.worker.Worker`` (its service, Redis client, audit emitter, gauges);
#: typed loosely because the run loop imports this module.
Worker = Any

__all__ = ["STREAMS", "Health"]

log = logging.getLogger(__name__)

#: The JetStream streams each worker kind needs to do its work.
STREAMS: dict[str, tuple[str, ...]] = {
    "authorize": (AUDIT, APPROVALS),
    "execute": (AUDIT,),
    "approval": (AUDIT, APPROVALS),
    "audit": (AUDIT, APPROVALS),
    "executor": (),
}
#: How long one readiness check may take before it counts as failed.
CHECK_TIMEOUT_S = 1.0


class Health:
    """The health server of one worker; :meth:`ready` once the worker has started."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.nc: NATS | None = None
        self.worker: Worker | None = None
        self._runner: web.AppRunner | None = None
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_Collector(self))

    def ready(self, worker: Worker) -> None:
        self.worker = worker

    async def start(self, host: str, port: int) -> None:
        app = web.Application()
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/metrics", self._metrics)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        try:
            await web.TCPSite(self._runner, host, port).start()
        except OSError as exc:
            await self._runner.cleanup()
            reason = os.strerror(exc.errno) if exc.errno else str(exc)
            raise StartupError(f"failed: health port {host}:{port}: {reason}") from None
        log.info("health on http://%s:%d (/healthz /readyz /metrics)", host, port)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"alive": True})

    async def _readyz(self, request: web.Request) -> web.Response:
        reason = await self.not_ready()
        if reason is None:
            return web.json_response({"ready": True})
        return web.json_response({"ready": False, "reason": reason}, status=503)

    async def not_ready(self) -> str | None:
        """Why the worker cannot serve now, or ``None`` when it can."""
        nc, worker = self.nc, self.worker
        if nc is None or worker is None:
            return "starting"
        if not nc.is_connected:
            return "nats not connected"
        if worker.audit is not None and worker.audit.full:
            return "audit outbox full"
        js = nc.jetstream(timeout=CHECK_TIMEOUT_S)
        for stream in STREAMS.get(self.kind, ()):
            try:
                await js.stream_info(stream)
            except Exception as exc:  # any failure is a reason, and only its kind is shown
                return f"stream {stream}: {type(exc).__name__}"
        if worker.redis is not None:
            try:
                await asyncio.wait_for(worker.redis.ping(), CHECK_TIMEOUT_S)
            except Exception as exc:  # as above: a reason, never a crash of the probe
                return f"redis: {type(exc).__name__}"
        return None

    async def _metrics(self, request: web.Request) -> web.Response:
        body = generate_latest(self.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


class _Collector(Collector):
    """Reads the worker's own counters at scrape time (nothing is counted twice)."""

    def __init__(self, health: Health) -> None:
        self._health = health
        self._started = time.time()

    def collect(self) -> Iterator[Metric]:
        h = self._health
        kind = h.kind
        up = GaugeMetricFamily("handshake_up", "1 once the worker has started", labels=["worker"])
        up.add_metric([kind], 1.0 if h.worker is not None else 0.0)
        yield up
        nc = h.nc
        connected = GaugeMetricFamily(
            "handshake_nats_connected", "1 while connected to NATS", labels=["worker"]
        )
        connected.add_metric([kind], 1.0 if nc is not None and nc.is_connected else 0.0)
        yield connected
        if nc is not None:
            reconnects = CounterMetricFamily(
                "handshake_nats_reconnects", "Reconnections to NATS", labels=["worker"]
            )
            reconnects.add_metric([kind], float(nc.stats.get("reconnects", 0)))
            yield reconnects
        worker = h.worker
        if worker is None:
            return
        yield from _endpoint_metrics(kind, worker)
        for name, value in sorted(worker.gauges.items()):
            gauge = GaugeMetricFamily(f"handshake_{name}", _GAUGE_HELP.get(name, name),
                                      labels=["worker"])  # fmt: skip
            gauge.add_metric([kind], value)
            yield gauge
        if worker.audit is not None:
            yield from _audit_metrics(kind, worker.audit)


_GAUGE_HELP = {
    "policy_alarm": "1 while a policy reload was refused (the previous set stays in force)",
    "approvals_pending": "Transactions waiting for a human decision",
    "audit_lag": "Audit events in the stream not yet in the log",
}


def _endpoint_metrics(kind: str, worker: Worker) -> Iterator[Metric]:
    labels = ["worker", "endpoint"]
    requests = CounterMetricFamily(
        "handshake_requests", "Requests by endpoint and outcome code", labels=[*labels, "outcome"]
    )
    errors = CounterMetricFamily("handshake_request_errors", "Requests answered with an error",
                                 labels=labels)  # fmt: skip
    seconds = CounterMetricFamily(
        "handshake_request_processing_seconds", "Time spent serving requests", labels=labels
    )
    for endpoint in worker.service.endpoints:
        stats = endpoint.stats
        for outcome, count in sorted(stats.outcomes.items()):
            requests.add_metric([kind, endpoint.name, outcome], float(count))
        errors.add_metric([kind, endpoint.name], float(stats.num_errors))
        seconds.add_metric([kind, endpoint.name], stats.processing_time_ns / 1e9)
    yield from (requests, errors, seconds)


def _audit_metrics(kind: str, audit: Any) -> Iterator[Metric]:
    outbox = audit.outbox
    waiting = GaugeMetricFamily("handshake_audit_outbox_events",
                                "Audit events not yet acknowledged by the stream",
                                labels=["worker"])  # fmt: skip
    waiting.add_metric([kind], float(len(outbox)))
    yield waiting
    for name, value, text in (
        ("published", audit.published, "Audit events the stream acknowledged"),
        ("retried", outbox.retried, "Audit event publishes retried from the outbox"),
        ("failed", audit.failed, "Audit events that could not be recorded"),
    ):
        counter = CounterMetricFamily(f"handshake_audit_events_{name}", text, labels=["worker"])
        counter.add_metric([kind], float(value))
        yield counter
