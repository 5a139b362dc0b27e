"""Wiring of an execute worker (queue group ``execute``)."""

from __future__ import annotations

from functools import partial

from nats.aio.client import Client as NATS

from mcp_handshake.shared.settings import Settings
from mcp_handshake.shared.subjects import QueueGroups
from mcp_handshake.shared.wire import EmptyRequest, ExecuteRequest

from ..common import VERSION, load_common, load_sessions, redis_client
from ..proofs import KeyRegistry, ProofVerifier
from ..runtime import Endpoint, MicroService
from ..runtime.worker import Worker
from ..signing import DispatchSigner, ReceiptSigner
from ..tokens import TokenStore
from .handler import ExecuteDeps, handle_execute, handle_keys


async def build(settings: Settings, nc: NATS) -> Worker:
    common = load_common(settings)
    cfg = common.config
    redis = redis_client(settings)
    deps = ExecuteDeps(
        nc=nc,
        subjects=settings.subjects,
        sessions=await load_sessions(common),
        tools=common.tools,
        policy=common.policy,
        store=TokenStore(redis),
        proofs=ProofVerifier(KeyRegistry(redis)),
        receipts=ReceiptSigner.from_file(cfg.resolve(cfg.keys.receipt), cfg.service.id),
        dispatcher=DispatchSigner.from_file(cfg.resolve(cfg.keys.dispatch)),
        executor_timeout_s=cfg.service.executor_timeout_s,
    )
    limits = {"max_payload": settings.max_payload, "max_inflight": cfg.service.max_inflight}
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
    return Worker(service, closers=[redis.aclose])
