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
from .redis import Client, redis_client
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
    """Every part of the store, over one Redis connection pool."""

    redis: Client
    tokens: TokenStore
    approvals: ApprovalStore
    counters: Counters
    dispatches: DispatchLog
    reconciles: ReconcileStore

    @classmethod
    def over(cls, redis: Client) -> Store:
        scripts = Scripts(redis)
        tokens = TokenStore(scripts)
        return cls(
            redis=redis,
            tokens=tokens,
            approvals=ApprovalStore(scripts, tokens),
            counters=Counters(scripts),
            dispatches=DispatchLog(redis),
            reconciles=ReconcileStore(scripts),
        )

    @classmethod
    def open(cls, settings: Settings) -> Store:
        return cls.over(redis_client(settings))

    async def aclose(self) -> None:
        await self.redis.aclose()
