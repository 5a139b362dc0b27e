"""Wiring of an execute worker (queue group ``execute``)."""

from __future__ import annotations

from functools import partial
from typing import Any

from nats.aio.client import Client as NATS

from mcp_handshake.services.audit.hooks import execute_hook, worker_id
from mcp_handshake.services.core.proofs import KeyRegistry, ProofVerifier
from mcp_handshake.services.core.signing import DispatchSigner, ReceiptSigner
from mcp_handshake.services.execute.handler import ExecuteDeps, handle_execute, handle_keys
from mcp_handshake.services.runtime import Endpoint, MicroService
from mcp_handshake.services.runtime.audit import Audit, ensure_audit_stream
from mcp_handshake.services.runtime.build import (
    VERSION,
    duplicate_window,
    load_common,
    load_sessions,
    redis_client,
)
from mcp_handshake.services.runtime.telemetry import Metrics
from mcp_handshake.services.runtime.worker import Worker
from mcp_handshake.services.store.tokens import TokenStore
from mcp_handshake.shared.settings import Settings
from mcp_handshake.shared.subjects import QueueGroups
from mcp_handshake.shared.wire import EmptyRequest, ExecuteRequest


async def build(settings: Settings, nc: NATS) -> Worker:
    common = load_common(settings)
    cfg = common.config
    redis = redis_client(settings)
    await ensure_audit_stream(nc.jetstream(), duplicate_window(common.policy))
    audit = Audit(nc, worker_id("execute"))
    metrics = Metrics("execute")
    deps = ExecuteDeps(
        nc=nc,
        subjects=settings.subjects,
        sessions=await load_sessions(common),
        tools=common.tools,
        policy=common.policy,
        store=TokenStore(redis),
        proofs=ProofVerifier(KeyRegistry(redis)),
        audit=audit,
        receipts=ReceiptSigner.from_file(cfg.resolve(cfg.keys.receipt), cfg.service.id),
        dispatcher=DispatchSigner.from_file(cfg.resolve(cfg.keys.dispatch)),
        executor_timeout_s=cfg.service.executor_timeout_s,
    )
    limits: dict[str, Any] = {"max_payload": settings.max_payload,
                              "max_inflight": cfg.service.max_inflight,
                              "on_done": execute_hook(audit, metrics),
                              "metrics": metrics}  # fmt: skip
    endpoints = [
        Endpoint(
            "execute",
            settings.subjects.execute,
            QueueGroups.EXECUTE,
            ExecuteRequest,
            partial(handle_execute, deps=deps),
            **limits,
        ),
        Endpoint(
            "keys",
            settings.subjects.keys,
            QueueGroups.EXECUTE,
            EmptyRequest,
            partial(handle_keys, deps=deps),
            **limits,
        ),
    ]
    service = MicroService(
        "handshake-execute", VERSION, "Handshake phase 2, receipts and receipt keys", endpoints
    )
    return Worker(service, closers=[audit.drain, redis.aclose])
