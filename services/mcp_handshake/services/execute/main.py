"""An execute worker (queue group ``execute``): phase 2, receipts and receipt keys."""

from __future__ import annotations

from functools import partial

from nats.aio.client import Client as NATS

from mcp_handshake.services.core.dpop import GatewayKey, NonceIssuer
from mcp_handshake.services.core.proofs import ProofVerifier
from mcp_handshake.services.core.signing import DispatchSigner, ReceiptSigner
from mcp_handshake.services.execute.audit import execute_audit
from mcp_handshake.services.execute.batch import ExecuteBatchDeps, handle_execute_batch
from mcp_handshake.services.execute.handler import ExecuteDeps, handle_execute, handle_keys
from mcp_handshake.services.execute.reconcile import handle_reconcile, reconcile_audit
from mcp_handshake.services.runtime.batch import batch_audit
from mcp_handshake.services.runtime.build import open_kit
from mcp_handshake.services.runtime.streams import StartupError
from mcp_handshake.services.runtime.worker import Worker
from mcp_handshake.services.store import KeyRegistry
from mcp_handshake.services.store.scripts import Scripts
from mcp_handshake.shared.batch import DISPATCH_BATCH_TYP, BatchExecuteRequest
from mcp_handshake.shared.protocol import TOKEN_HEADER
from mcp_handshake.shared.settings import Settings
from mcp_handshake.shared.wire import EmptyRequest, ExecuteRequest, ReconcileRequest


def dpop_secrets(settings: Settings) -> tuple[GatewayKey | None, NonceIssuer | None]:
    """The key shared with gateways (without it, no forwarded DPoP ``htu`` is honoured)
    and, where server nonces are on, their key; a weak or open file stops the start
    (a missing one too, as every file a worker cannot read)."""
    try:
        key = settings.gateway_key_file and GatewayKey.from_file(settings.gateway_key_file)
        nonce = settings.dpop_nonce_key_file
        return key or None, NonceIssuer.from_file(nonce) if nonce else None
    except ValueError as exc:
        raise StartupError(f"configuration: {exc}", 2) from None


async def build(settings: Settings, nc: NATS) -> Worker:
    kit = open_kit(settings, nc, "execute")
    cfg, subjects = kit.config, settings.subjects
    await kit.open_sessions()
    audit = await kit.open_audit()
    store = kit.open_store()
    deps = ExecuteDeps(
        nc=nc,
        subjects=subjects,
        tools=kit.tools,
        policy=kit.policy,
        store=store,
        audit=audit,
        receipts=ReceiptSigner.from_file(cfg.resolve(cfg.keys.receipt), cfg.service.id),
        dispatcher=DispatchSigner.from_file(cfg.resolve(cfg.keys.dispatch)),
        proofs=ProofVerifier(  # after the signing keys: a missing mount names them first
            KeyRegistry(nc.jetstream(), create=True, replicas=settings.stream_replicas),
            *dpop_secrets(settings),
        ),
        executor_timeout_s=cfg.service.executor_timeout_s,
        intent_with_consume=settings.execute_intent == "concurrent",
    )
    hook = execute_audit(audit, kit.metrics)
    batch = ExecuteBatchDeps(
        deps,
        Scripts(store.redis, store.fast),  # the single path's connection (lean or redis-py)
        DispatchSigner.from_file(cfg.resolve(cfg.keys.dispatch), DISPATCH_BATCH_TYP),
        settings.max_batch,
        hook,
    )
    return kit.worker(
        "Handshake phase 2, receipts and receipt keys",
        [
            kit.endpoint("execute", subjects.execute, ExecuteRequest,
                         partial(handle_execute, deps=deps), require=(TOKEN_HEADER,),
                         audit=hook),
            kit.endpoint("execute-batch", subjects.execute_batch, BatchExecuteRequest,
                         partial(handle_execute_batch, deps=batch),
                         audit=batch_audit(audit, "execute.denied")),
            kit.endpoint("reconcile", subjects.reconcile, ReconcileRequest,
                         partial(handle_reconcile, deps=deps), audit=reconcile_audit(audit)),
            kit.endpoint("keys", subjects.keys, EmptyRequest, partial(handle_keys, deps=deps),
                         auth=False),
        ],
    )  # fmt: skip
