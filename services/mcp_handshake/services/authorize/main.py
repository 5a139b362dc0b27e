"""Wiring of an authorize worker (queue group ``authorize``)."""

from __future__ import annotations

from functools import partial
from typing import Any

from nats.aio.client import Client as NATS

from mcp_handshake.services.audit.hooks import authorize_hook, worker_id
from mcp_handshake.services.authorize.handler import AuthorizeDeps, handle_authorize, handle_tools
from mcp_handshake.services.core.signing import APPROVAL_TYP, DispatchSigner
from mcp_handshake.services.runtime import Endpoint, MicroService
from mcp_handshake.services.runtime.approvals import ApprovalQueue, ensure_stream
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
from mcp_handshake.shared.wire import AuthorizeRequest, EmptyRequest


async def build(settings: Settings, nc: NATS) -> Worker:
    common = load_common(settings)
    cfg = common.config
    redis = redis_client(settings)
    await ensure_stream(nc.jetstream(), settings.subjects, common.policy.max_lifetime_s + 60)
    await ensure_audit_stream(nc.jetstream(), duplicate_window(common.policy))
    audit = Audit(nc, worker_id("authorize"))
    metrics = Metrics("authorize")
    signer = DispatchSigner.from_file(cfg.resolve(cfg.keys.internal), APPROVAL_TYP)
    deps = AuthorizeDeps(
        sessions=await load_sessions(common),
        tools=common.tools,
        policy=common.policy,
        store=TokenStore(redis),
        approvals=ApprovalQueue(nc, settings.subjects, signer),
    )
    subjects = settings.subjects
    limits: dict[str, Any] = {
        "max_payload": settings.max_payload,
        "max_inflight": common.config.service.max_inflight,
        "on_done": authorize_hook(audit, metrics),
        "metrics": metrics,
    }
    endpoints = [
        Endpoint(
            "authorize",
            subjects.authorize,
            QueueGroups.AUTHORIZE,
            AuthorizeRequest,
            partial(handle_authorize, deps=deps),
            **limits,
        ),
        Endpoint(
            "tools",
            subjects.tools,
            QueueGroups.AUTHORIZE,
            EmptyRequest,
            partial(handle_tools, deps=deps),
            **limits,
        ),
    ]
    service = MicroService(
        "handshake-authorize", VERSION, "Handshake phase 1 and the tool catalog", endpoints
    )
    return Worker(service, closers=[audit.drain, redis.aclose])
