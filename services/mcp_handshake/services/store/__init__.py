"""The Redis side: transaction records, approvals, key registry, counters, dispatches.

Lua lives in ``lua/*.lua``, loaded by one loader (``scripts``); every key is
defined once, in ``mcp_handshake.shared.subjects.Keys``.
"""

from __future__ import annotations

from dataclasses import dataclass

from mcp_handshake.shared.settings import Settings

from .approvals import ApprovalStore
from .dispatches import DispatchLog
from .keys import KEYS_BUCKET, KeyRegistry
from .limits import Counters
from .reconcile import ReconcileStore
from .records import Approval, TxRecord
from .redis import Client, lean_connection, redis_client
from .resp import Resp
from .scripts import Scripts
from .tokens import RETENTION_S, TokenStore

__all__ = [
    "KEYS_BUCKET",
    "RETENTION_S",
    "Approval",
    "ApprovalStore",
    "Counters",
    "DispatchLog",
    "KeyRegistry",
    "ReconcileStore",
    "Store",
    "TokenStore",
    "TxRecord",
    "redis_client",
]


@dataclass(frozen=True, slots=True)
class Store:
    """Every part of the store, over one Redis connection pool (and, on a single Redis,
    the hot path's scripts and dispatch markers over one lean connection: ``fast``)."""

    redis: Client
    tokens: TokenStore
    approvals: ApprovalStore
    counters: Counters
    dispatches: DispatchLog
    reconciles: ReconcileStore
    fast: Resp | None = None

    @classmethod
    def over(cls, redis: Client, fast: Resp | None = None) -> Store:
        scripts = Scripts(redis, fast)
        tokens = TokenStore(scripts)
        return cls(
            redis=redis,
            tokens=tokens,
            approvals=ApprovalStore(scripts, tokens),
            counters=Counters(scripts),
            dispatches=DispatchLog(redis, fast),
            reconciles=ReconcileStore(scripts),
            fast=fast,
        )

    @classmethod
    def open(cls, settings: Settings) -> Store:
        return cls.over(redis_client(settings), lean_connection(settings))

    async def aclose(self) -> None:
        if self.fast is not None:
            await self.fast.aclose()
        await self.redis.aclose()
