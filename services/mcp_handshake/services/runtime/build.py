"""The shared builder: what every worker kind's ``main.py`` declares itself with.

A worker's ``build(settings, nc)`` opens a :class:`Kit` (configuration,
policy, tools, and on request sessions, the store and the audit emitter),
declares its endpoints with :meth:`Kit.endpoint`, and returns
:meth:`Kit.worker`. Everything opened here is closed when the worker stops.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any

from nats.aio.client import Client as NATS

from mcp_handshake.services.catalog import open_tools
from mcp_handshake.services.core.config import HandshakeConfig, load_config
from mcp_handshake.services.core.sessions import SessionVerifier
from mcp_handshake.services.core.tools import ToolRegistry
from mcp_handshake.services.policy import Policy, PolicyError, load_policy
from mcp_handshake.services.runtime.audit import STREAM as AUDIT_STREAM
from mcp_handshake.services.runtime.audit import Audit
from mcp_handshake.services.runtime.endpoint import AuditHook, Endpoint, Handler
from mcp_handshake.services.runtime.service import MicroService
from mcp_handshake.services.runtime.streams import StartupError, await_stream
from mcp_handshake.services.runtime.telemetry import Metrics
from mcp_handshake.services.runtime.worker import Worker
from mcp_handshake.services.store import Store
from mcp_handshake.shared.errors import Unavailable
from mcp_handshake.shared.settings import Settings

__all__ = ["VERSION", "Kit", "duplicate_window", "open_kit"]

log = logging.getLogger(__name__)

VERSION = "0.1.0"


def duplicate_window(policy: Policy) -> float:
    """The audit stream's duplicate window: longer than any transaction can stay usable,
    so a replayed execute intent is always recognized."""
    return policy.max_lifetime_s + 300


@dataclass
class Kit:
    """One worker's configuration and connections, and the builder of its endpoints."""

    kind: str
    settings: Settings
    config: HandshakeConfig
    policy: Policy
    tools: ToolRegistry
    nc: NATS
    metrics: Metrics
    sessions: SessionVerifier | None = None
    audit: Audit | None = None
    store: Store | None = None
    closers: list[Callable[[], Awaitable[Any]]] = field(default_factory=list)

    async def open_sessions(self) -> SessionVerifier:
        """The session verifier; endpoints declared after this verify sessions."""
        cfg = self.config
        self.sessions = await SessionVerifier.create(cfg.session, cfg.path.parent)
        return self.sessions

    async def open_audit(self) -> Audit:
        """The audit emitter, once the audit stream exists."""
        await await_stream(self.nc.jetstream(), AUDIT_STREAM)
        self.audit = Audit(self.nc, self.kind, outbox_limit=self.settings.audit_outbox_limit)
        self.closers.append(self.audit.drain)
        return self.audit

    def open_store(self) -> Store:
        """The Redis store, closed when the worker stops."""
        store = Store.open(self.settings)
        self.store = store
        self.closers.append(store.aclose)
        return store

    def endpoint(
        self,
        name: str,
        subject: str,
        request_type: type[Any],
        handler: Handler,
        *,
        auth: bool = True,
        audit: AuditHook | None = None,
        require: tuple[str, ...] = (),
        queue: str | None = None,
        max_payload: int | None = None,
    ) -> Endpoint:
        """An endpoint in this kind's queue group; ``auth`` verifies the session first
        and caps each caller's requests in flight (policy ``max_inflight_per_caller``).

        An endpoint with an ``audit`` hook answers ``unavailable`` while the audit
        outbox is full: no work is done whose events could not be recorded."""
        if auth and self.sessions is None:
            raise RuntimeError(f"{self.kind}: endpoint {name} needs sessions")
        if audit is not None and self.audit is not None:
            handler = _gated(handler, self.audit)
        return Endpoint(
            name,
            subject,
            queue or self.kind,
            request_type,
            handler,
            max_payload=max_payload or self.settings.max_payload,
            max_inflight=self.config.service.max_inflight,
            max_inflight_per_caller=self.policy.defaults.max_inflight_per_caller if auth else None,
            require=require,
            sessions=self.sessions if auth else None,
            audit=audit,
            metrics=self.metrics,
        )

    def worker(
        self,
        description: str,
        endpoints: Sequence[Endpoint],
        *,
        background: Sequence[Callable[[], Coroutine[Any, Any, Any]]] = (),
        closers: Sequence[Callable[[], Awaitable[Any]]] = (),
        metadata: dict[str, str] | None = None,
        extra_stats: Callable[[], dict[str, Any]] | None = None,
    ) -> Worker:
        service = MicroService(
            f"handshake-{self.kind}",
            VERSION,
            description,
            endpoints,
            metadata=metadata,
            extra_stats=lambda: {
                **(extra_stats() if extra_stats else {}),
                "policy": self.policy.status(),
            },
        )
        self.policy.gauges = self.metrics.gauges
        self.metrics.gauges["policy_alarm"] = 0.0
        return Worker(
            service,
            closers=[*closers, *self.closers],
            background=[*background, self.policy.watch],
            redis=self.store.redis if self.store is not None else None,
            audit=self.audit,
            gauges=self.metrics.gauges,
        )


def _gated(handler: Handler, audit: Audit) -> Handler:
    async def gated(request: Any) -> Any:
        if audit.full:
            log.warning("audit outbox full (%d events): refusing work", len(audit.outbox))
            raise Unavailable("audit trail backlogged; nothing was done", retry_after_s=1.0)
        return await handler(request)

    return gated


def open_kit(settings: Settings, nc: NATS, kind: str) -> Kit:
    """Load configuration, policy and tools for one worker of ``kind``."""
    config, tools = open_tools(load_config(settings.config_path))
    try:
        policy = load_policy(config.policy_file, tools, config.policy_defaults)
    except PolicyError as exc:  # one line per problem, naming the policy and its line
        raise StartupError(f"invalid_policy: {exc}", 2) from None
    return Kit(
        kind=kind,
        settings=settings,
        config=config,
        policy=policy,
        tools=tools,
        nc=nc,
        metrics=Metrics(kind),
    )
