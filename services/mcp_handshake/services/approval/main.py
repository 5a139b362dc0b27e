"""Wiring of an approval worker (queue group ``approval``, durable consumer)."""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
from functools import partial
from typing import Any

import msgspec
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.errors import Error as NatsError
from nats.js.api import AckPolicy, ConsumerConfig
from redis.exceptions import RedisError

from mcp_handshake.services.approval.agent import ConfirmationAgent, RuleBasedAgent
from mcp_handshake.services.approval.handler import (
    ApprovalDeps,
    handle_decide,
    handle_list,
    handle_status,
    run_agent,
)
from mcp_handshake.services.audit.hooks import approval_hook, worker_id
from mcp_handshake.services.core.signing import APPROVAL_TYP, INTERNAL_HEADER, DispatchVerifier
from mcp_handshake.services.runtime import Endpoint, MicroService
from mcp_handshake.services.runtime.approvals import DURABLE, STREAM, ensure_stream
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
from mcp_handshake.services.store.tokens import PENDING_KEY, TokenStore
from mcp_handshake.shared.errors import HandshakeError
from mcp_handshake.shared.settings import Settings
from mcp_handshake.shared.subjects import QueueGroups
from mcp_handshake.shared.wire import ApprovalRequest, DecideRequest, EmptyRequest, StatusRequest

log = logging.getLogger(__name__)

_request = msgspec.json.Decoder(ApprovalRequest)


def _load_agent(spec: str | None, deps_policy: Any, store: TokenStore) -> ConfirmationAgent:
    if not spec:
        return RuleBasedAgent(deps_policy, store)
    module, _, name = spec.partition(":")
    factory = getattr(importlib.import_module(module), name)
    agent: ConfirmationAgent = factory(deps_policy, store)
    return agent


async def _handle_queued(msg: Msg, deps: ApprovalDeps, verifier: DispatchVerifier) -> None:
    if not verifier.verify((msg.headers or {}).get(INTERNAL_HEADER), msg.data):
        log.warning("dropped an approval request without a valid internal signature")
        await msg.term()
        return
    try:
        request = _request.decode(msg.data)
    except msgspec.DecodeError:
        await msg.term()
        return
    try:
        await run_agent(request.txn, deps)
    except HandshakeError:
        # e.g. Redis unavailable: try again shortly, nothing is lost
        await msg.nak(delay=1.0)
        return
    await msg.ack()


async def _consume(nc: NATS, deps: ApprovalDeps, verifier: DispatchVerifier) -> None:
    js = nc.jetstream()
    config = ConsumerConfig(ack_policy=AckPolicy.EXPLICIT, ack_wait=30.0, max_ack_pending=1000)
    while True:
        try:
            psub = await js.pull_subscribe(
                deps.subjects.approval_requests, durable=DURABLE, stream=STREAM, config=config
            )
            break
        except (NatsError, TimeoutError):
            await asyncio.sleep(0.5)
    try:
        while True:
            try:
                msgs = await psub.fetch(batch=32, timeout=1.0)
            except TimeoutError:
                continue
            except NatsError:
                await asyncio.sleep(0.5)
                continue
            await asyncio.gather(*(_handle_queued(m, deps, verifier) for m in msgs))
    finally:
        with contextlib.suppress(Exception):
            await psub.unsubscribe()


async def build(settings: Settings, nc: NATS) -> Worker:
    common = load_common(settings)
    cfg = common.config
    redis = redis_client(settings)
    store = TokenStore(redis)
    await ensure_stream(nc.jetstream(), settings.subjects, common.policy.max_lifetime_s + 60)
    await ensure_audit_stream(nc.jetstream(), duplicate_window(common.policy))
    audit = Audit(nc, worker_id("approval"))
    deps = ApprovalDeps(
        nc=nc,
        subjects=settings.subjects,
        sessions=await load_sessions(common),
        policy=common.policy,
        store=store,
        agent=_load_agent(cfg.approval_agent, common.policy, store),
        audit=audit,
    )
    verifier = DispatchVerifier.from_file(cfg.resolve(cfg.keys.internal_public), APPROVAL_TYP)

    async def on_decided(msg: Msg) -> None:
        deps.wake(msg.subject.rsplit(".", 1)[-1])

    decided = await nc.subscribe(settings.subjects.approval_decided("*"), cb=on_decided)
    subjects = settings.subjects
    metrics = Metrics("approval")
    limits: dict[str, Any] = {"max_payload": settings.max_payload,
                              "max_inflight": cfg.service.max_inflight,
                              "on_done": approval_hook(audit), "metrics": metrics}  # fmt: skip

    async def watch_pending() -> None:
        """Pending approvals for the gauge; unused tokens past their time for the counter."""
        while True:
            try:
                metrics.gauges["approvals_pending"] = float(await redis.zcard(PENDING_KEY))
                expired = await store.sweep_expired()
                if expired:
                    metrics.tokens.add(expired, {"event": "expired", "tier": ""})
            except (RedisError, HandshakeError):
                metrics.gauges.pop("approvals_pending", None)
            await asyncio.sleep(5.0)

    endpoints = [
        Endpoint("status", subjects.status, QueueGroups.APPROVAL, StatusRequest,
                 partial(handle_status, deps=deps), **limits),
        Endpoint("approvals-list", subjects.approvals_list, QueueGroups.APPROVAL, EmptyRequest,
                 partial(handle_list, deps=deps), **limits),
        Endpoint("approvals-decide", subjects.approvals_decide, QueueGroups.APPROVAL,
                 DecideRequest, partial(handle_decide, deps=deps), **limits),
    ]  # fmt: skip
    service = MicroService(
        "handshake-approval",
        VERSION,
        "Confirmation agent, human approvals and transaction status",
        endpoints,
        extra_stats=lambda: {"approvals_pending": metrics.gauges.get("approvals_pending")},
    )
    return Worker(
        service,
        closers=[decided.unsubscribe, audit.drain, redis.aclose],
        background=[partial(_consume, nc, deps, verifier), watch_pending],
    )
