"""The token store: transaction state in Redis, keyed by the token's hash.

Redis never sees a token, only its SHA-256, so a dump of Redis yields nothing
usable. One hash per transaction holds the binding (sub, tool, txn, params
hash, tier), the state authorize decided, the status, and for restricted
transactions the approval record (params for the confirmation agent, the
approvers' preview and its hash, quorum, votes). Issuing is one round trip;
consuming is one Lua script that checks binding, status, proof and ``jti``
and marks the token used in one atomic step. A mismatching attempt burns the
token. A used token's record stays ``RETENTION_S`` so ``status`` can still
answer, then expires. Any Redis failure is ``Unavailable``: fail closed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any, Literal

import msgspec
from redis.asyncio import Redis
from redis.exceptions import NoScriptError, RedisError

from mcp_handshake.shared.errors import (
    ApprovalDenied,
    ApprovalPending,
    InvalidTransaction,
    RateLimited,
    Unavailable,
    ValidationFailed,
)
from mcp_handshake.shared.subjects import Keys

__all__ = [
    "EXPIRED_COUNTER",
    "LIVE_KEY",
    "PENDING_KEY",
    "RETENTION_S",
    "Approval",
    "ApprovalRecord",
    "TokenStore",
    "TxState",
    "TxStatus",
]

log = logging.getLogger(__name__)

#: How long a transaction's record outlives its token, for status questions.
RETENTION_S = 900
#: How long a proof's jti is remembered: beyond the proof's accepted iat window.
JTI_TTL_S = 180
#: Sorted set of transactions waiting for a human decision (score: expiry).
PENDING_KEY = "handshake:approvals:pending"
#: Sorted set of tokens granted and not yet used (score: expiry); what the sweep
#: finds past its score expired unused. Counters of expired tokens per day.
LIVE_KEY = "handshake:tokens:live"
EXPIRED_COUNTER = "handshake:tokens:expired"


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
    #: Why policy escalated this transaction to approval, if it did.
    escalated: str | None = None


class TxStatus(msgspec.Struct, frozen=True, kw_only=True):
    """The public story of a transaction, as ``handshake.v1.status`` tells it."""

    txn: str
    sub: str
    tool: str
    status: str
    expires_at: float
    decided_by: str | None = None


class ApprovalRecord(msgspec.Struct, frozen=True, kw_only=True):
    """A restricted transaction as approvers and the confirmation agent see it."""

    txn: str
    sub: str
    tool: str
    tier: str
    status: str
    expires_at: float
    params: dict[str, Any]
    preview: Any
    preview_hash: str
    quorum: int
    approver_roles: list[str]
    approvals: list[Approval]
    requested_at: float
    escalated: str | None = None
    agent: str | None = None
    reason: str | None = None


# KEYS[1]: the record. ARGV: ttl ms, then field/value pairs.
_ISSUE = """
local fields = {}
for i = 2, #ARGV do fields[#fields + 1] = ARGV[i] end
redis.call('HSET', KEYS[1], unpack(fields))
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return 1
"""

# KEYS: record. ARGV: sub, tool, txn, ph, retention ms, now, proof ('1' when a
# valid proof came with the request), thumbprint of the proof's key. A session
# bound to a key at authorize (jkt) can only be executed with a proof by that key.
_CONSUME = """
local f = redis.call('HMGET', KEYS[1], 'status', 'sub', 'tool', 'txn', 'ph', 'state',
                     'tier', 'approvals', 'jkt')
local status = f[1]
if not status then return {'missing'} end
local function burn()
  redis.call('HSET', KEYS[1], 'status', 'burnt')
  redis.call('PEXPIRE', KEYS[1], ARGV[5])
end
if f[2] ~= ARGV[1] or f[3] ~= ARGV[2] or f[4] ~= ARGV[3] or f[5] ~= ARGV[4] then
  if status == 'granted' or status == 'pending_approval' then burn() end
  return {'mismatch'}
end
if status == 'pending_approval' then return {'pending'} end
if status == 'denied' then return {'denied'} end
if status ~= 'granted' then return {'used'} end
if f[7] ~= 'public' and ARGV[7] ~= '1' then burn() return {'no_proof'} end
if f[9] and f[9] ~= '' and ARGV[7] == '1' and f[9] ~= ARGV[8] then burn() return {'wrong_key'} end
redis.call('HSET', KEYS[1], 'status', 'executed', 'executed_at', ARGV[6])
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return {'ok', f[6], f[8] or '[]'}
"""

# Mark a live token burnt (e.g. after a bad proof), whatever its binding.
_BURN = """
local status = redis.call('HGET', KEYS[1], 'status')
if status == 'granted' or status == 'pending_approval' then
  redis.call('HSET', KEYS[1], 'status', 'burnt')
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
end
return 1
"""

# Change the status of a record that still exists (never resurrect an expired one).
_SET_STATUS = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'status', ARGV[1])
if ARGV[2] ~= '' then redis.call('HSET', KEYS[1], 'decided_by', ARGV[2]) end
return 1
"""

# One vote or decision, atomically. ARGV: by, 'approve'|'deny', now, token ttl ms,
# retention ms, preview hash, reason, 'final' (the confirmation agent's approval
# needs no quorum). A voter counts once; a single denial denies.
_DECIDE = """
local st = redis.call('HGET', KEYS[1], 'status')
if not st then return {'missing', '', '0'} end
local approvals = cjson.decode(redis.call('HGET', KEYS[1], 'approvals') or '[]')
if st ~= 'pending_approval' then return {'decided', st, tostring(#approvals)} end
if redis.call('HSETNX', KEYS[1], 'vote:' .. ARGV[1], ARGV[2]) == 0 then
  return {'duplicate', st, tostring(#approvals)}
end
local decisions = cjson.decode(redis.call('HGET', KEYS[1], 'decisions') or '[]')
decisions[#decisions + 1] = {by = ARGV[1], decision = ARGV[2], at = tonumber(ARGV[3]),
                             preview_hash = ARGV[6], reason = ARGV[7]}
redis.call('HSET', KEYS[1], 'decisions', cjson.encode(decisions))
if ARGV[2] == 'deny' then
  redis.call('HSET', KEYS[1], 'status', 'denied', 'decided_by', ARGV[1])
  redis.call('PEXPIRE', KEYS[1], ARGV[5])
  return {'denied', 'denied', tostring(#approvals)}
end
approvals[#approvals + 1] = {by = ARGV[1], at = tonumber(ARGV[3])}
redis.call('HSET', KEYS[1], 'approvals', cjson.encode(approvals))
local quorum = tonumber(redis.call('HGET', KEYS[1], 'quorum') or '1')
if #approvals >= quorum or ARGV[8] == 'final' then
  local expires = tonumber(ARGV[3]) + tonumber(ARGV[4]) / 1000
  redis.call('HSET', KEYS[1], 'status', 'granted', 'decided_by', ARGV[1],
             'expires_at', string.format('%.3f', expires))
  redis.call('PEXPIRE', KEYS[1], ARGV[4])
  return {'approved', 'granted', tostring(#approvals)}
end
return {'voted', st, tostring(#approvals)}
"""

# Fixed-window counter. KEYS[1]: counter. ARGV: window ms. Returns count, ttl ms.
_COUNT = """
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
return {n, redis.call('PTTL', KEYS[1])}
"""

_state_decoder = msgspec.json.Decoder(TxState)
_approvals_decoder = msgspec.json.Decoder(list[Approval] | dict[str, Any])
_encode = msgspec.json.encode

_RECORD_FIELDS = ["txn", "sub", "tool", "tier", "status", "expires_at", "params", "preview",
                  "preview_hash", "quorum", "approver_roles", "approvals", "requested_at",
                  "escalated", "agent", "reason"]  # fmt: skip


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _approvals(raw: Any) -> list[Approval]:
    if not raw:
        return []
    decoded = _approvals_decoder.decode(raw)
    return decoded if isinstance(decoded, list) else []  # an empty Lua table is '{}'


class TokenStore:
    def __init__(self, redis: Redis) -> None:
        self._redis = redis
        self._issue = redis.register_script(_ISSUE)
        self._consume = redis.register_script(_CONSUME)
        self._burn = redis.register_script(_BURN)
        self._set_status = redis.register_script(_SET_STATUS)
        self._decide = redis.register_script(_DECIDE)
        self._count = redis.register_script(_COUNT)

    @property
    def redis(self) -> Redis:
        return self._redis

    async def issue(
        self,
        token_hash: str,
        state: TxState,
        status: Literal["granted", "pending_approval"],
        ttl_s: float,
        approval: ApprovalRecord | None = None,
    ) -> None:
        """Store a new transaction (one round trip)."""
        fields: list[str | bytes] = [
            "status", status, "sub", state.sub, "tool", state.tool, "txn", state.txn,
            "ph", state.ph, "tier", state.tier, "state", _encode(state),
            "expires_at", repr(state.expires_at), "jkt", state.jkt or "",
        ]  # fmt: skip
        if approval is not None:
            fields += [
                "params", _encode(approval.params), "preview", _encode(approval.preview),
                "preview_hash", approval.preview_hash, "quorum", str(approval.quorum),
                "approver_roles", _encode(approval.approver_roles), "approvals", "[]",
                "requested_at", repr(approval.requested_at),
                "escalated", approval.escalated or "", "agent", approval.agent or "",
                "reason", approval.reason or "",
            ]  # fmt: skip
        ttl_ms = int(ttl_s * 1000)
        index_ttl = int(ttl_s) + RETENTION_S
        try:
            for attempt in (1, 2):
                # EVALSHA directly: a pipelined Script object would ask SCRIPT EXISTS
                # first, an extra round trip on every grant.
                async with self._redis.pipeline(transaction=False) as pipe:
                    pipe.evalsha(self._issue.sha, 1, Keys.tx(token_hash), ttl_ms, *fields)
                    pipe.set(Keys.txn(state.txn), f"{token_hash} {state.sub}", ex=index_ttl)
                    pipe.zadd(LIVE_KEY, {state.txn: state.expires_at})
                    if approval is not None:
                        pipe.zadd(PENDING_KEY, {state.txn: state.expires_at})
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

    async def consume(
        self,
        token_hash: str,
        *,
        sub: str,
        tool: str,
        txn: str,
        ph: str,
        proof: bool = False,
        jti: str = "",
        thumbprint: str = "",
    ) -> TxState:
        """Use the token up and return its state, or raise the protocol error.

        With a proof, its ``jti`` is claimed (per key, for ``JTI_TTL_S``) in the same
        round trip. A reused ``jti`` is refused and the token it came with is burnt.
        """
        key = Keys.tx(token_hash)
        args: list[str | int] = [sub, tool, txn, ph, RETENTION_S * 1000, repr(time.time()),
                                 "1" if proof else "0", thumbprint]  # fmt: skip
        fresh_jti = True
        try:
            if proof and jti:
                fresh_jti, res = await self._consume_with_jti(key, args, thumbprint, jti)
            else:
                res = await self._consume(keys=[key], args=args)
        except RedisError:
            log.warning("token store unavailable while consuming", extra={"txn": txn})
            raise Unavailable("token store unavailable; nothing was executed") from None
        outcome = _text(res[0])
        if not fresh_jti:
            if outcome == "ok":
                await self.set_status(token_hash, "burnt")
            raise ValidationFailed("proof jti already used", transaction_id=txn)
        if outcome == "ok":
            state = _state_decoder.decode(res[1])
            approvals = _approvals(res[2])
            return (
                msgspec.structs.replace(state, approvals=tuple(approvals)) if approvals else state
            )
        if outcome == "pending":
            raise ApprovalPending(transaction_id=txn, retry_after_s=1.0)
        if outcome == "denied":
            raise ApprovalDenied(transaction_id=txn)
        if outcome == "no_proof":
            raise ValidationFailed(
                "proof of possession required (Handshake-Proof header)", transaction_id=txn
            )
        if outcome == "wrong_key":
            raise ValidationFailed(
                "proof key is not the key the transaction was authorized for", transaction_id=txn
            )
        raise InvalidTransaction(transaction_id=txn)

    async def _consume_with_jti(
        self, key: str, args: list[str | int], thumbprint: str, jti: str
    ) -> tuple[bool, Any]:
        """SET NX of the jti marker and the consume script, pipelined (one round trip).

        The marker is keyed by the proof key, so it lives in another Cluster slot
        than the record and cannot share the script; a replayed jti still consumed
        the token, which the caller then burns: the failure is on the safe side.
        """
        marker = f"handshake:jti:{{{thumbprint}}}:{jti}"
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.set(marker, b"1", nx=True, px=JTI_TTL_S * 1000)
            pipe.evalsha(self._consume.sha, 1, key, *args)
            claimed, res = await pipe.execute(raise_on_error=False)
        if isinstance(claimed, Exception):
            raise claimed
        if isinstance(res, NoScriptError):
            await self._redis.script_load(_CONSUME)  # Redis restarted or flushed
            res = await self._consume(keys=[key], args=args)
        elif isinstance(res, Exception):
            raise res
        return bool(claimed), res

    async def sweep_expired(self) -> int:
        """Count and forget tokens whose time ran out unused; returns how many.

        Candidates are the live-set members past their score. A used token's
        record outlives its token (``RETENTION_S``), so a record that is gone,
        or still granted or pending past its time, was never used; one that
        was approved late is rescheduled at its new expiry. All of this work
        is here, off the request path.
        """
        now = time.time()
        try:
            txns = [_text(t) for t in await self._redis.zrangebyscore(LIVE_KEY, "-inf", now)]
            if not txns:
                return 0
            async with self._redis.pipeline(transaction=False) as pipe:
                for txn in txns:
                    pipe.get(Keys.txn(txn))
                located = await pipe.execute()
            async with self._redis.pipeline(transaction=False) as pipe:
                for raw in located:
                    th = _text(raw).partition(" ")[0] if raw else "-"
                    pipe.hmget(Keys.tx(th), ["status", "expires_at"])
                records = await pipe.execute()
            expired, later = 0, {}
            for txn, (status, expires_at) in zip(txns, records, strict=True):
                state = _text(status) if status else None
                if state in {None, "granted", "pending_approval"}:
                    new_expiry = float(expires_at) if expires_at else 0.0
                    if state is not None and new_expiry > now:
                        later[txn] = new_expiry
                    else:
                        expired += 1
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.zrem(LIVE_KEY, *[t for t in txns if t not in later])
                if later:
                    pipe.zadd(LIVE_KEY, later)
                if expired:
                    pipe.incrby(EXPIRED_COUNTER, expired)
                await pipe.execute()
        except RedisError:
            raise Unavailable("token store unavailable") from None
        return expired

    async def burn(self, token_hash: str) -> None:
        try:
            await self._burn(keys=[Keys.tx(token_hash)], args=[RETENTION_S * 1000])
        except RedisError:
            raise Unavailable("token store unavailable; nothing was executed") from None

    async def locate(self, txn: str) -> tuple[str, str] | None:
        """(token hash, subject) of a transaction, if it is known."""
        try:
            raw = await self._redis.get(Keys.txn(txn))
        except RedisError:
            raise Unavailable("token store unavailable") from None
        if raw is None:
            return None
        th, _, sub = _text(raw).partition(" ")
        return th, sub

    async def status(self, txn: str) -> TxStatus | None:
        """What is known of a transaction; ``None`` if it never existed or is long gone.

        A transaction whose record expired before use reads ``expired``.
        """
        found = await self.locate(txn)
        if found is None:
            return None
        th, sub = found
        try:
            raw = await self._redis.hmget(
                Keys.tx(th), ["txn", "tool", "status", "expires_at", "decided_by"]
            )
        except RedisError:
            raise Unavailable("token store unavailable") from None
        if raw[0] is None:
            return TxStatus(txn=txn, sub=sub, tool="", status="expired", expires_at=0.0)
        got = [_text(v) if v is not None else None for v in raw]
        return TxStatus(
            txn=txn,
            sub=sub,
            tool=got[1] or "",
            status=got[2] or "",
            expires_at=float(got[3] or 0),
            decided_by=got[4] or None,
        )

    async def set_status(self, token_hash: str, status: str, *, decided_by: str = "") -> None:
        """Record a transaction's later status (best effort: the outcome is already decided)."""
        try:
            await self._set_status(keys=[Keys.tx(token_hash)], args=[status, decided_by])
        except RedisError:
            log.warning("could not record a transaction status")

    async def approval_record(self, txn: str) -> ApprovalRecord | None:
        found = await self.locate(txn)
        if found is None:
            return None
        try:
            raw = await self._redis.hmget(Keys.tx(found[0]), _RECORD_FIELDS)
        except RedisError:
            raise Unavailable("token store unavailable") from None
        if raw[0] is None or raw[6] is None:
            return None
        v: dict[str, Any] = dict(zip(_RECORD_FIELDS, raw, strict=True))
        return ApprovalRecord(
            txn=_text(v["txn"]),
            sub=_text(v["sub"]),
            tool=_text(v["tool"]),
            tier=_text(v["tier"]),
            status=_text(v["status"]),
            expires_at=float(v["expires_at"]),
            params=msgspec.json.decode(v["params"]),
            preview=msgspec.json.decode(v["preview"]),
            preview_hash=_text(v["preview_hash"]),
            quorum=int(v["quorum"]),
            approver_roles=msgspec.json.decode(v["approver_roles"]),
            approvals=_approvals(v["approvals"]),
            requested_at=float(v["requested_at"]),
            escalated=_text(v["escalated"]) or None,
            agent=_text(v["agent"]) or None,
            reason=_text(v["reason"]) or None,
        )

    async def decide(
        self,
        txn: str,
        by: str,
        decision: Literal["approve", "deny"],
        *,
        token_ttl_s: float,
        preview_hash: str,
        reason: str = "",
        final: bool = False,
    ) -> tuple[str, str, int]:
        """Apply one decision; returns (outcome, status, approvals so far). Outcomes:
        approved, denied, voted, duplicate, decided (already), missing."""
        found = await self.locate(txn)
        if found is None:
            return "missing", "", 0
        args: Sequence[str | int] = [by, decision, repr(time.time()), int(token_ttl_s * 1000),
                                     RETENTION_S * 1000, preview_hash, reason,
                                     "final" if final else ""]  # fmt: skip
        try:
            res: Any = await self._decide(keys=[Keys.tx(found[0])], args=list(args))
            if _text(res[0]) in {"approved", "denied"}:
                await self._redis.zrem(PENDING_KEY, txn)
        except RedisError:
            raise Unavailable("token store unavailable; nothing was decided") from None
        return _text(res[0]), _text(res[1]), int(res[2])

    async def pending(self, limit: int = 500) -> list[str]:
        """Transactions waiting for approval that have not expired (oldest expiry first)."""
        now = time.time()
        try:
            await self._redis.zremrangebyscore(PENDING_KEY, "-inf", now)
            raw = await self._redis.zrangebyscore(PENDING_KEY, now, "+inf", start=0, num=limit)
        except RedisError:
            raise Unavailable("token store unavailable") from None
        return [_text(t) for t in raw]

    async def count(self, key: str, window_s: float) -> tuple[int, float]:
        """Increment a fixed-window counter; returns (count, seconds left in the window)."""
        try:
            n, ttl = await self._count(keys=[key], args=[int(window_s * 1000)])
        except RedisError:
            raise Unavailable("token store unavailable") from None
        return int(n), max(int(ttl), 0) / 1000

    async def rate_limit(self, sub: str, tool: str, requests: int, per_s: float) -> None:
        """``RateLimited`` (with a retry hint) once ``sub`` used up its window for ``tool``."""
        n, left = await self.count(f"handshake:rl:{{{sub}}}:{tool}", per_s)
        if n > requests:
            raise RateLimited(
                f"rate limit of {requests} per {per_s:g}s reached", retry_after_s=round(left, 3)
            )
