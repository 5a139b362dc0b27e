"""Transaction tokens: issue, consume, burn; the record keyed by the token's hash.

Redis never sees a token, only its SHA-256, so a dump of Redis yields nothing
usable. Issuing is one round trip; consuming is one script that checks
binding, status, what the policy in force demands, and the proof, and marks the
token used in one atomic step (with a proof, its ``jti`` is claimed in that step
too). Every script touches one Cluster hash slot: the record's. A mismatching or
refused attempt burns the token. A used token's record stays ``RETENTION_S`` so
``status`` can still answer, then expires. Any Redis failure is ``Unavailable``:
fail closed.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from mcp_handshake.shared.errors import (
    ApprovalDenied,
    ApprovalPending,
    Forbidden,
    HandshakeError,
    InvalidTransaction,
    Unavailable,
    ValidationFailed,
)
from mcp_handshake.shared.subjects import Keys

from .records import TxRecord, from_hash, to_hash
from .redis import StoreError
from .scripts import Arg, Scripts

__all__ = ["JTI_TTL_S", "RETENTION_S", "TokenStore"]

log = logging.getLogger(__name__)

#: How long a transaction's record outlives its token, for status questions.
RETENTION_S = 900
#: How long a proof's jti is remembered: beyond the proof's accepted iat window.
JTI_TTL_S = 180

_REFUSALS: dict[str, tuple[type[HandshakeError], str | None]] = {
    "pending": (ApprovalPending, None),
    "denied": (ApprovalDenied, None),
    "forbidden": (Forbidden, "policy no longer allows this caller to use this tool"),
    "needs_approval": (
        Forbidden,
        "policy now requires approval for this operation; authorize it again",
    ),
    "no_proof": (ValidationFailed, "proof of possession required (Handshake-Proof header)"),
    "wrong_key": (
        ValidationFailed,
        "proof key is not the key the transaction was authorized for",
    ),
}


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _flag(value: bool) -> str:
    return "1" if value else "0"


def _refusal(outcome: str, txn: str) -> HandshakeError:
    error, message = _REFUSALS.get(outcome, (InvalidTransaction, None))
    if error is ApprovalPending:
        return ApprovalPending(transaction_id=txn, retry_after_s=1.0)
    return error(message, transaction_id=txn) if message else error(transaction_id=txn)


class TokenStore:
    def __init__(self, scripts: Scripts) -> None:
        self._scripts = scripts
        self._redis = scripts.redis

    async def issue(
        self,
        token_hash: str,
        record: TxRecord,
        ttl_s: float,
    ) -> None:
        """Store a new transaction (one round trip): the record, the txn index, the live
        set, and for a pending approval the pending index."""
        index_ttl = int(ttl_s) + RETENTION_S
        batch = self._scripts.batch()
        batch.script("issue", [Keys.tx(token_hash)], [int(ttl_s * 1000), *to_hash(record)])
        batch.pipe.set(Keys.txn(record.txn), f"{token_hash} {record.sub}", ex=index_ttl)
        batch.pipe.zadd(Keys.LIVE, {record.txn: record.expires_at})
        if record.status == "pending_approval":
            batch.pipe.zadd(Keys.PENDING, {record.txn: record.expires_at})
        try:
            await batch.execute()
        except StoreError:
            log.warning("token store unavailable while issuing", extra={"txn": record.txn})
            raise Unavailable("token store unavailable; nothing was granted") from None

    async def consume(
        self,
        token_hash: str,
        *,
        sub: str,
        tool: str,
        txn: str,
        ph: str,
        allowed: bool,
        proof_required: bool,
        approval_required: bool,
        proof: bool = False,
        jti: str = "",
        thumbprint: str = "",
    ) -> TxRecord:
        """Use the token up and return its record, or raise the protocol error.

        ``allowed``, ``proof_required`` and ``approval_required`` are what the policy in
        force says now, whatever the transaction was authorized under: a live token the
        caller may no longer use is burnt (``forbidden``), as is one that now needs a
        proof that did not come (``validation_failed``) or an approval it never had
        (``forbidden``). A transaction still waiting for approval stays so.

        With a proof, its ``jti`` is claimed twice in the same round trip: for this
        transaction inside the consume script (its marker shares the record's Cluster
        slot), so a replayed proof is refused atomically and never consumes the token;
        and per key (``Keys.jti``, the protocol's "once per key", another slot), so a key
        cannot sign a second transaction's proof with a jti it used. A proof binds its
        transaction, so only a new signature can reuse a jti across transactions: when
        the per-key marker names another token, a token the script consumed is burnt.
        """
        args: list[Arg] = [sub, tool, txn, ph, RETENTION_S * 1000, repr(time.time()),
                _flag(proof), thumbprint, _flag(allowed), _flag(proof_required),
                _flag(approval_required)]  # fmt: skip
        claim = bool(proof and jti)
        try:
            res, held = await self._consume(token_hash, args, thumbprint if claim else "", jti)
        except StoreError:
            log.warning("token store unavailable while consuming", extra={"txn": txn})
            raise Unavailable("token store unavailable; nothing was executed") from None
        outcome = _text(res[0])
        # The per-key marker holds the token that claimed it: the same token is the
        # per-transaction claim's to judge (a concurrent copy of one proof: one runs).
        reused = held is not None and _text(held) != token_hash
        if outcome == "replay" or reused:
            if outcome == "ok":
                await self.set_status(token_hash, "burnt")
            raise ValidationFailed("proof jti already used", transaction_id=txn)
        if outcome == "ok":
            return from_hash(res[1])
        raise _refusal(outcome, txn)

    async def _consume(
        self, token_hash: str, args: list[Arg], thumbprint: str, jti: str
    ) -> tuple[Any, Any]:
        """The consume script's reply and, with a proof (``thumbprint``), what the per-key
        jti marker held (``None``: claimed now). One round trip on a single Redis."""
        keys = [Keys.tx(token_hash)]
        if not thumbprint:
            return await self._scripts.call("consume", keys, args), None
        keys.append(Keys.tx_jti(token_hash, thumbprint, jti))
        batch = self._scripts.batch()
        batch.pipe.set(Keys.jti(thumbprint, jti), token_hash, nx=True, get=True,
                       px=JTI_TTL_S * 1000)  # fmt: skip
        batch.script("consume", keys, [*args, JTI_TTL_S * 1000])
        held, res = await batch.execute()
        return res, held

    async def burn(self, token_hash: str) -> None:
        try:
            await self._scripts.call("burn", [Keys.tx(token_hash)], [RETENTION_S * 1000])
        except StoreError:
            raise Unavailable("token store unavailable; nothing was executed") from None

    async def set_status(self, token_hash: str, status: str, *, decided_by: str = "") -> None:
        """Record a transaction's later status (best effort: the outcome is already decided)."""
        try:
            await self._scripts.call("set_status", [Keys.tx(token_hash)], [status, decided_by])
        except StoreError:
            log.warning("could not record a transaction status")

    async def release_intent(self, token_hash: str, seq: int) -> None:
        """Note that the attempt whose execute intent is at ``seq`` will never dispatch
        (best effort: without it, the attempt that consumed the token is refused)."""
        try:
            await self._scripts.call("release_intent", [Keys.tx(token_hash)], [seq])
        except StoreError:
            log.warning("could not release an execute intent")

    async def intent_released(self, token_hash: str) -> int | None:
        """The stream sequence of the intent last released for this token, if any."""
        try:
            raw = await self._redis.hget(Keys.tx(token_hash), "intent_released")
        except StoreError:
            raise Unavailable("token store unavailable; nothing was executed") from None
        return int(raw) if raw is not None else None

    async def locate(self, txn: str) -> tuple[str, str] | None:
        """(token hash, subject) of a transaction, if it is known."""
        try:
            raw = await self._redis.get(Keys.txn(txn))
        except StoreError:
            raise Unavailable("token store unavailable") from None
        if raw is None:
            return None
        th, _, sub = _text(raw).partition(" ")
        return th, sub

    async def record(self, txn: str) -> TxRecord | None:
        """What is known of a transaction; ``None`` if it never existed or is long gone.

        A transaction whose record expired before use reads ``expired``.
        """
        found = await self.locate(txn)
        if found is None:
            return None
        th, sub = found
        try:
            raw = await self._redis.hgetall(Keys.tx(th))
        except StoreError:
            raise Unavailable("token store unavailable") from None
        if not raw:
            return TxRecord(txn=txn, sub=sub, status="expired")
        return from_hash(raw)
