"""The token store: transaction state in Redis, keyed by the token's hash.

Redis never sees a token, only its SHA-256, so a dump of Redis yields nothing
usable. Issuing is one round trip (a pipelined script and status write);
consuming is one Lua script that reads, checks the binding and status, and
deletes in one atomic step. A mismatching attempt still burns the token.
Any Redis failure becomes ``Unavailable``: we fail closed, never execute.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, Literal

import msgspec
from redis.asyncio import Redis
from redis.exceptions import RedisError

from mcp_handshake.shared.errors import (
    ApprovalDenied,
    ApprovalPending,
    InvalidTransaction,
    Unavailable,
)
from mcp_handshake.shared.subjects import Keys

__all__ = ["Approval", "TokenStore", "TxState", "TxStatusRecord"]

log = logging.getLogger(__name__)


class Approval(msgspec.Struct, frozen=True):
    by: str
    at: float


class TxState(msgspec.Struct, frozen=True, kw_only=True):
    """What authorize decided, stored (as JSON) under the token's hash."""

    txn: str
    sub: str
    tool: str
    ph: str
    tier: str
    auth_at: float
    expires_at: float
    #: Thumbprint of the key the caller must prove possession of, if bound.
    jkt: str | None = None
    approvals: tuple[Approval, ...] = ()
    agent: str | None = None


class TxStatusRecord(msgspec.Struct, frozen=True, kw_only=True):
    """The public story of a transaction, readable by its transaction id.

    Stored as a Redis hash so a status change is one ``HSET``.
    """

    txn: str
    sub: str
    tool: str
    status: str
    expires_at: float
    decided_by: str = ""
    token_hash: str = ""

    def to_redis(self) -> dict[Any, Any]:
        return {f: str(getattr(self, f)) for f in self.__struct_fields__}

    @classmethod
    def from_redis(cls, raw: Mapping[Any, Any]) -> TxStatusRecord:
        data: dict[str, Any] = {k.decode(): v.decode() for k, v in raw.items()}
        data["expires_at"] = float(data.get("expires_at", 0))
        return msgspec.convert(data, cls)


# Write the state hash and its TTL atomically, so a key can never live forever.
_ISSUE = """
redis.call('HSET', KEYS[1], 'status', ARGV[1], 'sub', ARGV[2], 'tool', ARGV[3],
           'txn', ARGV[4], 'ph', ARGV[5], 'state', ARGV[6])
redis.call('PEXPIRE', KEYS[1], ARGV[7])
return 1
"""

# Read, check binding and status, delete: one atomic step. A binding mismatch
# burns the token; a pending approval leaves it in place for a later try.
_CONSUME = """
local f = redis.call('HMGET', KEYS[1], 'status', 'sub', 'tool', 'txn', 'ph', 'state')
if not f[1] then return {'missing'} end
if f[2] ~= ARGV[1] or f[3] ~= ARGV[2] or f[4] ~= ARGV[3] or f[5] ~= ARGV[4] then
  redis.call('DEL', KEYS[1])
  return {'mismatch'}
end
if f[1] == 'pending_approval' then return {'pending'} end
redis.call('DEL', KEYS[1])
if f[1] == 'denied' then return {'denied'} end
if f[1] ~= 'granted' then return {'mismatch'} end
return {'ok', f[6]}
"""

# Change a status record only while it exists (never resurrect an expired one).
_SET_STATUS = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'status', ARGV[1])
if ARGV[2] ~= '' then redis.call('HSET', KEYS[1], 'decided_by', ARGV[2]) end
return 1
"""

_state_decoder = msgspec.json.Decoder(TxState)
_encode = msgspec.json.encode

#: Status records outlive tokens so late questions about a transaction still get an answer.
STATUS_RECORD_TTL_S = 24 * 3600


class TokenStore:
    def __init__(self, redis: Redis) -> None:
        self._redis = redis
        self._issue = redis.register_script(_ISSUE)
        self._consume = redis.register_script(_CONSUME)
        self._set_status = redis.register_script(_SET_STATUS)

    async def issue(
        self,
        token_hash: str,
        state: TxState,
        status: Literal["granted", "pending_approval"],
        ttl_s: float,
    ) -> None:
        record = TxStatusRecord(
            txn=state.txn,
            sub=state.sub,
            tool=state.tool,
            status=status,
            expires_at=state.expires_at,
            token_hash=token_hash,
        )
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                await self._issue(
                    keys=[Keys.tx(token_hash)],
                    args=[
                        status,
                        state.sub,
                        state.tool,
                        state.txn,
                        state.ph,
                        _encode(state),
                        int(ttl_s * 1000),
                    ],
                    client=pipe,
                )
                pipe.hset(Keys.status(state.txn), mapping=record.to_redis())
                pipe.expire(Keys.status(state.txn), STATUS_RECORD_TTL_S)
                await pipe.execute()
        except RedisError:
            log.warning("token store unavailable while issuing", extra={"txn": state.txn})
            raise Unavailable("token store unavailable; nothing was granted") from None

    async def consume(self, token_hash: str, *, sub: str, tool: str, txn: str, ph: str) -> TxState:
        """Burn the token and return its state, or raise the protocol error."""
        try:
            res: Any = await self._consume(keys=[Keys.tx(token_hash)], args=[sub, tool, txn, ph])
        except RedisError:
            log.warning("token store unavailable while consuming", extra={"txn": txn})
            raise Unavailable("token store unavailable; nothing was executed") from None
        outcome = res[0].decode() if isinstance(res[0], bytes) else res[0]
        if outcome == "ok":
            return _state_decoder.decode(res[1])
        if outcome == "pending":
            raise ApprovalPending(transaction_id=txn)
        if outcome == "denied":
            raise ApprovalDenied(transaction_id=txn)
        raise InvalidTransaction(transaction_id=txn)

    async def status(self, txn: str) -> TxStatusRecord | None:
        try:
            raw = await self._redis.hgetall(Keys.status(txn))
        except RedisError:
            raise Unavailable("token store unavailable") from None
        return TxStatusRecord.from_redis(raw) if raw else None

    async def set_status(self, txn: str, status: str, *, decided_by: str = "") -> None:
        """Record a transaction's later status (best effort: the outcome is already decided)."""
        try:
            await self._set_status(keys=[Keys.status(txn)], args=[status, decided_by])
        except RedisError:
            log.warning("could not record transaction status", extra={"txn": txn})
