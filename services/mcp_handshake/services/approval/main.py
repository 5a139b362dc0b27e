"""An approval worker (queue group ``approval``, durable consumer): the confirmation agent,
human decisions and transaction status."""

from __future__ import annotations

import asyncio
import importlib
from functools import partial

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from mcp_handshake.services.approval.agent import ConfirmationAgent, RuleBasedAgent
from mcp_handshake.services.approval.audit import decide_audit
from mcp_handshake.services.approval.consumer import consume_approvals
from mcp_handshake.services.approval.handler import (
    ApprovalDeps,
    handle_decide,
    handle_list,
    handle_status,
)
from mcp_handshake.services.approval.notify import Notifier
from mcp_handshake.services.approval.rebuild import run_rebuild
from mcp_handshake.services.core.proofs import ProofVerifier
from mcp_handshake.services.core.signing import DispatchVerifier
from mcp_handshake.services.policy import Policy
from mcp_handshake.services.runtime.approvals import STREAM as APPROVALS
from mcp_handshake.services.runtime.build import Kit, open_kit
from mcp_handshake.services.runtime.streams import StartupError, await_stream
from mcp_handshake.services.runtime.worker import Worker
from mcp_handshake.services.store import KeyRegistry, Store
from mcp_handshake.services.store.sweep import sweep_expired
from mcp_handshake.shared.errors import HandshakeError
from mcp_handshake.shared.protocol import APPROVAL_TYP
from mcp_handshake.shared.settings import Settings
from mcp_handshake.shared.wire import DecideRequest, EmptyRequest, StatusRequest


def _load_agent(spec: str | None, policy: Policy, store: Store) -> ConfirmationAgent:
    if not spec:
        return RuleBasedAgent(policy, store)
    module, _, name = spec.partition(":")
    factory = getattr(importlib.import_module(module), name)
    agent: ConfirmationAgent = factory(policy, store)
    return agent


async def _watch_pending(kit: Kit, store: Store, notifier: Notifier | None) -> None:
    """Pending approvals for the gauge and expiry notices; unused tokens past their time
    for the counter."""
    gauges = kit.metrics.gauges
    while True:
        try:
            for txn in await store.approvals.take_expired():
                rec = await store.tokens.record(txn)
                if notifier is not None and rec is not None:
                    notifier.notify("expired", rec)
            gauges["approvals_pending"] = float(await store.approvals.pending_count())
            expired = await sweep_expired(store.redis)
            if expired:
                kit.metrics.tokens.add(expired, {"event": "expired", "tier": ""})
        except HandshakeError:
            gauges.pop("approvals_pending", None)
        await asyncio.sleep(5.0)


async def build(settings: Settings, nc: NATS) -> Worker:
    kit = open_kit(settings, nc, "approval")
    cfg, subjects = kit.config, settings.subjects
    try:
        hook = cfg.webhook
        notifier = Notifier(hook, cfg.resolve(hook.secret_file)) if hook else None
    except ValueError as exc:
        raise StartupError(f"configuration: {exc}", 2) from None
    await kit.open_sessions()
    audit = await kit.open_audit()
    store = kit.open_store()
    await await_stream(nc.jetstream(), APPROVALS)
    deps = ApprovalDeps(nc=nc, subjects=subjects, policy=kit.policy, store=store,
                        agent=_load_agent(cfg.approval_agent, kit.policy, store),
                        proofs=ProofVerifier(KeyRegistry(nc.jetstream())),
                        notifier=notifier)  # fmt: skip
    verifier = DispatchVerifier.from_file(cfg.resolve(cfg.keys.internal_public), APPROVAL_TYP)

    async def on_decided(msg: Msg) -> None:
        deps.wake(msg.subject.rsplit(".", 1)[-1])

    decided = await nc.subscribe(subjects.approval_decided("*"), cb=on_decided)
    gauges = kit.metrics.gauges
    return kit.worker(
        "Confirmation agent, human approvals and transaction status",
        [
            kit.endpoint("status", subjects.status, StatusRequest,
                         partial(handle_status, deps=deps)),
            kit.endpoint("approvals-list", subjects.approvals_list, EmptyRequest,
                         partial(handle_list, deps=deps)),
            kit.endpoint("approvals-decide", subjects.approvals_decide, DecideRequest,
                         partial(handle_decide, deps=deps), audit=decide_audit(audit)),
        ],
        background=[partial(consume_approvals, nc, deps, verifier, audit),
                    partial(_watch_pending, kit, store, notifier),
                    partial(run_rebuild, kit, store)],
        closers=[decided.unsubscribe, *([notifier.aclose] if notifier else [])],
        extra_stats=lambda: {"approvals_pending": gauges.get("approvals_pending")},
    )  # fmt: skip
