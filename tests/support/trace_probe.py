"""Runs authorize, execute and executor workers in one process with an in-memory span
exporter, makes one client call, and prints the spans as JSON (used by test_tracing)."""

from __future__ import annotations

import asyncio
import json
import sys
import tempfile
from pathlib import Path

from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from mcp_handshake.client import HandshakeClient, ProofKey
from mcp_handshake.services.audit.main import build as build_audit
from mcp_handshake.services.authorize.main import build as build_authorize
from mcp_handshake.services.dev.devhome import mint_session
from mcp_handshake.services.dev.devstack import Stack, StackSpec
from mcp_handshake.services.execute.main import build as build_execute
from mcp_handshake.services.executor.main import builder
from mcp_handshake.services.runtime.worker import serve
from mcp_handshake.shared.keys import generate_private_key


async def main(home: Path) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    reader = InMemoryMetricReader()
    metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))
    stack = Stack(home, StackSpec())
    stack.start_nats()
    stack.start_redis()
    stack.start_target()
    stop = asyncio.Event()
    workers = [
        asyncio.create_task(serve(stack.settings(kind), kind, build, stop, install_signals=False))
        for kind, build in (("authorize", build_authorize), ("execute", build_execute),
                            ("executor", builder([])), ("audit", build_audit))
    ]  # fmt: skip
    try:
        await stack.wait_ready({"handshake-authorize": 1, "handshake-execute": 1,
                                "handshake-executor": 1})  # fmt: skip
        key = ProofKey(generate_private_key())
        session = mint_session(home, "alice", roles=["billing"], jkt=key.thumbprint)
        exporter.clear()
        async with HandshakeClient(
            stack.nats_url or "",
            session=session,
            proof_key=key,
            connect_options=stack.agent_options(),
        ) as hs:
            result = await hs.call("payments.list_invoices", {"limit": 1})
        await asyncio.sleep(0.2)
    finally:
        stop.set()
        await asyncio.gather(*workers, return_exceptions=True)
        stack.stop()
    spans = [
        {
            "name": s.name,
            "trace_id": format(s.context.trace_id, "032x"),
            "kind": s.kind.name,
            "attributes": dict(s.attributes or {}),
        }
        for s in exporter.get_finished_spans()
    ]
    points = []
    data = reader.get_metrics_data()
    for rm in data.resource_metrics if data else []:
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                for p in metric.data.data_points:
                    value = getattr(p, "value", None)
                    if value is None:
                        value = getattr(p, "count", None)
                    points.append(
                        {
                            "name": metric.name,
                            "attributes": dict(p.attributes or {}),
                            "value": value,
                        }
                    )
    print(json.dumps({"txn": result.transaction_id, "spans": spans, "metrics": points}))


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tmp)))
