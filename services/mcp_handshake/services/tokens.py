"""The token store: transaction state in Redis, keyed by the token's hash.

Redis never sees a token, only its SHA-256, so a dump of Redis yields nothing
usable. One hash per transaction holds the binding (sub, tool, txn, params
hash), the state authorize decided, and the status. Issuing is one round trip
(the state script plus the txn-id index, pipelined); consuming is one Lua
script that reads, checks binding and status, and marks the token used in one
atomic step. A mismatching attempt burns the token. A used token's record
stays a while (``RETENTION_S``) so ``status`` can still answer, then expires.
Any Redis failure becomes ``Unavailable``: we fail closed, never execute.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Literal

import msgspec
from redis.asyncio import Redis
from redis.exceptions import NoScriptError, RedisError

from mcp_handshake.shared.errors import (
    ApprovalDenied,
    ApprovalPending,
    InvalidTransaction,
    Unavailable,
)
from mcp_handshake.shared.subjects import Keys

__all__ = ["RETENTION_S", "Approval", "TokenStore", "TxState", "TxStatus"]

log = logging.getLogger(__name__)

#: How long a transaction's record outlives its token, for status questions.
RETENTION_S = 900


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


class TxStatus(msgspec.Struct, frozen=True, kw_only=True):
    """The public story of a transaction, as ``handshake.v1.status`` tells it."""

    txn: str
    sub: str
    tool: str
    status: str
    expires_at: float
    decided_by: str | None = None


# Write the state hash and its TTL atomically, so a key can never live forever.
_ISSUE = """
redis.call('HSET', KEYS[1], 'status', ARGV[1], 'sub', ARGV[2], 'tool', ARGV[3],
           'txn', ARGV[4], 'ph', ARGV[5], 'state', ARGV[6], 'expires_at', ARGV[8])
redis.call('PEXPIRE', KEYS[1], ARGV[7])
return 1
"""

# Check binding and status, then mark the token used: one atomic step.
# ARGV: sub, tool, txn, ph, retention ms, now.
_CONSUME = """
local f = redis.call('HMGET', KEYS[1], 'status', 'sub', 'tool', 'txn', 'ph', 'state')
local status = f[1]
if not status then return {'missing'} end
local live = status == 'granted' or status == 'pending_approval'
if f[2] ~= ARGV[1] or f[3] ~= ARGV[2] or f[4] ~= ARGV[3] or f[5] ~= ARGV[4] then
  if live then
    redis.call('HSET', KEYS[1], 'status', 'burnt')
    redis.call('PEXPIRE', KEYS[1], ARGV[5])
  end
  return {'mismatch'}
end
if status == 'pending_approval' then return {'pending'} end
if status == 'denied' then return {'denied'} end
if status ~= 'granted' then return {'used'} end
redis.call('HSET', KEYS[1], 'status', 'executed', 'executed_at', ARGV[6])
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return {'ok', f[6]}
"""

# Change the status of a record that still exists (never resurrect an expired one).
_SET_STATUS = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'status', ARGV[1])
if ARGV[2] ~= '' then redis.call('HSET', KEYS[1], 'decided_by', ARGV[2]) end
return 1
"""

_state_decoder = msgspec.json.Decoder(TxState)
_encode = msgspec.json.encode


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
        args: list[str | bytes | int] = [status, state.sub, state.tool, state.txn, state.ph,
                                         _encode(state), int(ttl_s * 1000),
                                         repr(state.expires_at)]  # fmt: skip
        try:
            for attempt in (1, 2):
                # EVALSHA directly: a pipelined Script object would ask SCRIPT EXISTS
                # first, an extra round trip on every grant.
                async with self._redis.pipeline(transaction=False) as pipe:
                    pipe.evalsha(self._issue.sha, 1, Keys.tx(token_hash), *args)
                    pipe.set(Keys.txn(state.txn), token_hash, ex=int(ttl_s) + RETENTION_S)
                    try:
                        await pipe.execute()
                        break
                    except NoScriptError:
                        if attempt == 2:
                            raise
                        await self._redis.script_load(_ISSUE)  # Redis restarted or flushed
        except RedisError:
            log.warning("token store unavailable while issuing", extra={"txn": state.txn})
            raise Unavailable("token store unavailable; nothing was granted") from None

    async def consume(self, token_hash: str, *, sub: str, tool: str, txn: str, ph: str) -> TxState:
        """Use the token up and return its state, or raise the protocol error."""
        args: list[str | int] = [sub, tool, txn, ph, RETENTION_S * 1000, repr(time.time())]
        try:
            res: Any = await self._consume(keys=[Keys.tx(token_hash)], args=args)
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

    async def token_hash_of(self, txn: str) -> str | None:
        try:
            raw = await self._redis.get(Keys.txn(txn))
        except RedisError:
            raise Unavailable("token store unavailable") from None
        return raw.decode() if isinstance(raw, bytes) else raw

    async def status(self, txn: str) -> TxStatus | None:
        """What is known of a transaction; ``None`` if it never existed or is long gone."""
        th = await self.token_hash_of(txn)
        if th is None:
            return None
        try:
            raw = await self._redis.hmget(
                Keys.tx(th), ["txn", "sub", "tool", "status", "expires_at", "decided_by"]
            )
        except RedisError:
            raise Unavailable("token store unavailable") from None
        got = [v.decode() if isinstance(v, bytes) else v for v in raw]
        if got[0] != txn:
            return None
        return TxStatus(
            txn=txn,
            sub=got[1] or "",
            tool=got[2] or "",
            status=got[3] or "",
            expires_at=float(got[4] or 0),
            decided_by=got[5] or None,
        )

    async def set_status(self, token_hash: str, status: str, *, decided_by: str = "") -> None:
        """Record a transaction's later status (best effort: the outcome is already decided)."""
        try:
            await self._set_status(keys=[Keys.tx(token_hash)], args=[status, decided_by])
        except RedisError:
            log.warning("could not record a transaction status")
