"""An authorize worker (queue group ``authorize``): phase 1 and the tool catalog."""

from __future__ import annotations

from functools import partial

from nats.aio.client import Client as NATS

from mcp_handshake.services.authorize.audit import authorize_audit
from mcp_handshake.services.authorize.batch import AuthorizeBatchDeps, handle_authorize_batch
from mcp_handshake.services.authorize.handler import AuthorizeDeps, handle_authorize, handle_tools
from mcp_handshake.services.core.signing import DispatchSigner
from mcp_handshake.services.runtime.approvals import STREAM as APPROVALS
from mcp_handshake.services.runtime.approvals import ApprovalQueue
from mcp_handshake.services.runtime.batch import batch_audit
from mcp_handshake.services.runtime.build import duplicate_window, open_kit
from mcp_handshake.services.runtime.streams import await_stream
from mcp_handshake.services.runtime.worker import Worker
from mcp_handshake.services.store.pending import PendingLog
from mcp_handshake.services.store.scripts import Scripts
from mcp_handshake.shared.batch import BatchAuthorizeRequest
from mcp_handshake.shared.protocol import APPROVAL_TYP
from mcp_handshake.shared.settings import Settings
from mcp_handshake.shared.wire import AuthorizeRequest, EmptyRequest


async def build(settings: Settings, nc: NATS) -> Worker:
    kit = open_kit(settings, nc, "authorize")
    cfg, subjects = kit.config, settings.subjects
    await kit.open_sessions()
    audit = await kit.open_audit()
    await await_stream(nc.jetstream(), APPROVALS)
    signer = DispatchSigner.from_file(cfg.resolve(cfg.keys.internal), APPROVAL_TYP)
    deps = AuthorizeDeps(
        tools=kit.tools,
        policy=kit.policy,
        store=kit.open_store(),
        approvals=ApprovalQueue(nc, subjects, signer),
        pending=await PendingLog.opened(
            nc.jetstream(), duplicate_window(kit.policy), settings.stream_replicas
        ),
    )
    hook = authorize_audit(audit, kit.metrics)
    # The batch rounds over the connection the single path uses (the lean one on a single
    # Redis, redis-py on Sentinel and Cluster: ``Store.fast`` is None there).
    rounds = Scripts(deps.store.redis, deps.store.fast)
    batch = AuthorizeBatchDeps(deps, rounds, settings.max_batch, hook, audit)
    return kit.worker(
        "Handshake phase 1 and the tool catalog",
        [
            kit.endpoint("authorize", subjects.authorize, AuthorizeRequest,
                         partial(handle_authorize, deps=deps),
                         audit=hook),
            kit.endpoint("authorize-batch", subjects.authorize_batch, BatchAuthorizeRequest,
                         partial(handle_authorize_batch, deps=batch),
                         audit=batch_audit(audit, "authorize.denied")),
            kit.endpoint("tools", subjects.tools, EmptyRequest, partial(handle_tools, deps=deps)),
        ],
    )  # fmt: skip
