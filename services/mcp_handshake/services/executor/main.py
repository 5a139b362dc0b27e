"""An executor worker for one or more targets (queue group per target)."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from functools import partial
from typing import Any

from nats.aio.client import Client as NATS

from mcp_handshake.services.core.signing import DispatchVerifier
from mcp_handshake.services.executor.audit import executor_audit
from mcp_handshake.services.executor.batch import ExecutorBatchDeps, handle_dispatch_batch
from mcp_handshake.services.executor.handler import ExecutorDeps, handle_dispatch
from mcp_handshake.services.executor.targets import TargetClient
from mcp_handshake.services.executor.upstream_watch import upstream_watch
from mcp_handshake.services.runtime.build import open_kit
from mcp_handshake.services.runtime.worker import Worker
from mcp_handshake.shared.batch import DISPATCH_BATCH_TYP, DispatchBatch
from mcp_handshake.shared.settings import Settings
from mcp_handshake.shared.subjects import QueueGroups
from mcp_handshake.shared.wire import Dispatch


def builder(targets: list[str]) -> Callable[[Settings, NATS], Coroutine[Any, Any, Worker]]:
    """The build function of an executor for ``targets`` (all configured ones if empty)."""

    async def build(settings: Settings, nc: NATS) -> Worker:
        kit = open_kit(settings, nc, "executor")
        cfg = kit.config
        names = targets or sorted(cfg.targets)
        clients = TargetClient.all_from(cfg, names)
        audit = await kit.open_audit()
        #: Upstream tools refused for drift since start ("target.tool" -> change): `status`.
        drifted: dict[str, str] = {}
        deps = ExecutorDeps(
            verifier=DispatchVerifier.from_file(cfg.resolve(cfg.keys.dispatch_public)),
            tools=kit.tools,
            targets=clients,
            dispatches=kit.open_store().dispatches,
        )
        endpoints = [
            kit.endpoint(f"executor-{name}", settings.subjects.executor(name), Dispatch,
                         partial(handle_dispatch, deps=deps), auth=False,
                         audit=executor_audit(audit, kit.metrics, drifted),
                         queue=QueueGroups.executor(name),
                         max_payload=settings.max_payload * 2)
            for name in names
        ]  # fmt: skip
        batch = ExecutorBatchDeps(
            DispatchVerifier.from_file(cfg.resolve(cfg.keys.dispatch_public), DISPATCH_BATCH_TYP),
            deps,
        )
        # A batch holds at most max_batch dispatches, each at most a request's size.
        batch_payload = settings.max_payload * 2 + settings.max_batch * 1024
        endpoints += [
            kit.endpoint(f"executor-batch-{name}", settings.subjects.executor_batch(name),
                         DispatchBatch, partial(handle_dispatch_batch, deps=batch), auth=False,
                         queue=QueueGroups.executor(name), max_payload=batch_payload)
            for name in names
        ]  # fmt: skip
        return kit.worker(
            "Runs signed dispatches against target APIs",
            endpoints,
            closers=[c.aclose for c in clients.values()],
            metadata={"targets": ",".join(names)},
            extra_stats=lambda: {"drift": dict(drifted)},
            background=[upstream_watch(kit.tools, clients, drifted, audit, kit.metrics)],
        )

    return build
