"""Wiring of an executor worker for one or more targets (queue group per target)."""

from __future__ import annotations

from functools import partial

from nats.aio.client import Client as NATS

from mcp_handshake.services.core.signing import DispatchVerifier
from mcp_handshake.services.executor.handler import ExecutorDeps, handle_dispatch
from mcp_handshake.services.executor.targets import TargetClient
from mcp_handshake.services.runtime import Endpoint, MicroService
from mcp_handshake.services.runtime.build import VERSION, load_common
from mcp_handshake.services.runtime.telemetry import Metrics
from mcp_handshake.services.runtime.worker import Worker
from mcp_handshake.shared.settings import Settings
from mcp_handshake.shared.subjects import QueueGroups
from mcp_handshake.shared.wire import Dispatch


def builder(targets: list[str]):  # type: ignore[no-untyped-def]
    async def build(settings: Settings, nc: NATS) -> Worker:
        common = load_common(settings)
        cfg = common.config
        names = targets or sorted(cfg.targets)
        metrics = Metrics("executor")
        clients = TargetClient.all_from(cfg, names)
        deps = ExecutorDeps(
            verifier=DispatchVerifier.from_file(cfg.resolve(cfg.keys.dispatch_public)),
            tools=common.tools,
            targets=clients,
        )
        endpoints = [
            Endpoint(
                f"executor-{name}",
                settings.subjects.executor(name),
                QueueGroups.executor(name),
                Dispatch,
                partial(handle_dispatch, deps=deps),
                max_payload=settings.max_payload * 2,
                max_inflight=cfg.service.max_inflight,
                metrics=metrics,
            )
            for name in names
        ]
        service = MicroService(
            "handshake-executor",
            VERSION,
            "Runs signed dispatches against target APIs",
            endpoints,
            metadata={"targets": ",".join(names)},
        )
        return Worker(service, closers=[c.aclose for c in clients.values()])

    return build
