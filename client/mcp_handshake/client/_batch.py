"""Batches for ``call_many`` and ``stream``: the calls in flight share requests.

:class:`Batcher` collects the calls made in the same turn of the event loop
(at most ``window`` of them; from ``SPLIT_FROM`` on, half as many and at most
``BATCH_OPS``, so two batches or more are in flight) and runs them as one
``authorize.batch`` and one
``execute.batch`` (protocol.md, "Batch"), with one batch proof for the
operations above the public tier, asking for Merkle receipts (one signed root
per batch) unless told not to. Each call still gets its own grant, token,
result, error and verified receipt; an operation waiting for approval is
executed on its own once approved. A mediator without batch workers (no
responders) is used one call at a time instead.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import msgspec

from mcp_handshake.shared.batch import BatchReply
from mcp_handshake.shared.errors import (
    BadRequest,
    HandshakeError,
    OutcomeUnknown,
    Unavailable,
    ValidationFailed,
    error_from_wire,
)
from mcp_handshake.shared.proofs import ProofKey
from mcp_handshake.shared.protocol import PROOF_HEADER
from mcp_handshake.shared.subjects import Subjects
from mcp_handshake.shared.wire import ExecuteReply, Grant

__all__ = ["NO_BATCHES", "BatchCalls", "Batcher"]

R = TypeVar("R")

#: Most operations per batch request (the mediator's default limit).
MAX_OPS = 256
#: Most bytes of params per batch request, under the default 64 KiB request limit.
MAX_BYTES = 48 * 1024
#: Bytes of one operation besides its params (ids, token, JSON punctuation).
OP_OVERHEAD = 240
#: From this many calls in flight on, they go as batches of half as many (two or more
#: in flight): the mediator works on one while the client sends another or verifies
#: its receipts (docs/decisions.md, "Batch throughput").
SPLIT_FROM = 32
#: The most operations the client puts in one batch: past it, a batch saves no more
#: CPU per operation, and more batches in flight keep more of the mediator busy.
BATCH_OPS = 128
#: The ``unavailable`` message of a batch request no worker serves.
NO_BATCHES = "the mediator serves no batches"


@dataclass(frozen=True, slots=True)
class BatchCalls(Generic[R]):
    """What a :class:`Batcher` needs of the client."""

    subjects: Subjects
    proof_key: ProofKey | None
    #: ``(subject, body, headers, timeout error) -> reply``, with the session attached;
    #: no responders is ``Unavailable(NO_BATCHES)``.
    request: Callable[[str, Any, dict[str, str], type[HandshakeError]], Awaitable[BatchReply]]
    #: One operation alone (both phases).
    call: Callable[[str, dict[str, Any]], Awaitable[R]]
    #: Wait for approval of a grant, then execute it alone.
    wait: Callable[[str, dict[str, Any], Grant], Awaitable[R]]
    #: An execute reply as the call's result, its receipt verified.
    result: Callable[[ExecuteReply, Grant, str], Awaitable[R]]
    #: Ask execute batches for Merkle receipts (protocol.md, "Merkle batch receipts").
    merkle: bool = True
    #: Called when the mediator refused the request for them (asked no more).
    merkle_refused: Callable[[], None] | None = None


@dataclass(slots=True)
class _Item(Generic[R]):
    tool: str
    params: dict[str, Any]
    future: asyncio.Future[R]
    size: int = 0


class Batcher(Generic[R]):
    def __init__(self, calls: BatchCalls[R], window: int) -> None:
        self._calls = calls
        size = window if window < SPLIT_FROM else min(-(-window // 2), BATCH_OPS)
        self._window = max(1, min(size, MAX_OPS))
        self._queue: list[_Item[R]] = []
        self._scheduled = False
        self._tasks: set[asyncio.Task[None]] = set()
        self._supported = True
        self._merkle_refused = False

    async def call(self, tool: str, params: dict[str, Any]) -> R:
        """Both phases for one operation, in a batch with the calls made alongside it."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[R] = loop.create_future()
        item = _Item(tool, params, future, len(msgspec.json.encode(params)))
        self._queue.append(item)
        if len(self._queue) >= self._window:
            self._flush()
        elif not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._flush)
        return await item.future

    def _flush(self) -> None:
        self._scheduled = False
        items, self._queue = self._queue, []
        for chunk in _chunks(items):
            task = asyncio.get_running_loop().create_task(self._run(chunk))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _run(self, items: list[_Item[R]]) -> None:
        try:
            if self._supported:
                await self._batched(items)
            else:
                await asyncio.gather(*(self._single(i) for i in items))
        except Exception as exc:  # a HandshakeError for all, or a bug: never left waiting
            for item in items:
                _settle(item, exc)

    async def _single(self, item: _Item[R]) -> None:
        await _into(item, self._calls.call(item.tool, item.params))

    async def _batched(self, items: list[_Item[R]]) -> None:
        body = {"ops": [{"tool": i.tool, "params": i.params} for i in items]}
        try:
            reply = await self._calls.request(self._calls.subjects.authorize_batch, body, {},
                                              Unavailable)  # fmt: skip
        except Unavailable as exc:
            if exc.message != NO_BATCHES:
                raise
            self._supported = False
            await asyncio.gather(*(self._single(i) for i in items))
            return
        ready: list[tuple[_Item[R], Grant]] = []
        for item, result in zip(items, reply.results, strict=True):
            outcome = _decoded(result, Grant)
            if isinstance(outcome, HandshakeError):
                _settle(item, outcome)
            elif outcome.status == "pending_approval":
                self._later(item, outcome)
            else:
                ready.append((item, outcome))
        if ready:
            await self._execute(ready)

    def _later(self, item: _Item[R], grant: Grant) -> None:
        task = asyncio.get_running_loop().create_task(
            _into(item, self._calls.wait(item.tool, item.params, grant))
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _execute(self, ready: list[tuple[_Item[R], Grant]]) -> None:
        calls = self._calls
        ops, proven, sent = [], [], []
        for item, g in ready:
            if g.tier != "public" and calls.proof_key is None:  # as alone: refused unsent
                _settle(item, ValidationFailed(f"{item.tool} needs a proof key"))
                continue
            sent.append((item, g))
            ops.append({"transaction_id": g.transaction_id, "tool": item.tool,
                        "params": item.params, "token": g.token})  # fmt: skip
            if g.tier != "public":
                proven.append((g.transaction_id, g.params_hash))
        if not ops:
            return
        headers = {}
        if proven and calls.proof_key is not None:
            headers[PROOF_HEADER] = calls.proof_key.sign_batch(proven)
        reply = await self._send(ops, headers)
        for (item, g), result in zip(sent, reply.results, strict=True):
            outcome = _decoded(_with_receipt(result, reply.batch_receipt), ExecuteReply)
            if isinstance(outcome, HandshakeError):
                _settle(item, outcome)
            else:
                await _into(item, calls.result(outcome, g, item.tool))

    async def _send(self, ops: list[dict[str, Any]], headers: dict[str, str]) -> BatchReply:
        """One ``execute.batch``, asking for Merkle receipts unless the mediator refused
        the request for it (a mediator before them: ``bad_request``, and then nothing
        was done, so the same request goes again without)."""
        subject = self._calls.subjects.execute_batch
        body: dict[str, Any] = {"ops": ops}
        if self._calls.merkle and not self._merkle_refused:
            try:
                return await self._calls.request(subject, {**body, "receipts": "merkle"},
                                                 headers, OutcomeUnknown)  # fmt: skip
            except BadRequest:
                self._merkle_refused = True
                if self._calls.merkle_refused is not None:
                    self._calls.merkle_refused()
        return await self._calls.request(subject, body, headers, OutcomeUnknown)


def _with_receipt(result: Any, root: str | None) -> Any:
    """An operation's result in a Merkle batch with its receipt on its own (the batch's
    root, its index, path and leaf) as its ``receipt``, verified as any receipt (a
    malformed inclusion fails there, as a malformed receipt would)."""
    if not isinstance(result, dict) or "receipt" in result:
        return result
    inclusion = result.pop("inclusion", None)
    if not isinstance(inclusion, dict):
        return result
    own = {"root": root or "", **{k: inclusion.get(k) for k in ("index", "path", "leaf")}}
    return {**result, "receipt": msgspec.json.encode(own).decode()}


def _chunks(items: list[_Item[R]]) -> list[list[_Item[R]]]:
    """Items split so no batch request passes the mediator's default limits."""
    chunks: list[list[_Item[R]]] = []
    size = 0
    for item in items:
        cost = item.size + OP_OVERHEAD
        if not chunks or len(chunks[-1]) >= MAX_OPS or size + cost > MAX_BYTES:
            chunks.append([])
            size = 0
        chunks[-1].append(item)
        size += cost
    return chunks


def _decoded(result: Any, kind: type[Any]) -> Any:
    """An operation's result: the reply Struct, or its error as the exception."""
    if isinstance(result, dict) and isinstance(result.get("error"), dict):
        e = result["error"]
        return error_from_wire(str(e.get("code")), str(e.get("message")),
                               e.get("transaction_id"), e.get("retry_after_s"))  # fmt: skip
    try:
        return msgspec.convert(result, kind)
    except msgspec.ValidationError:
        return Unavailable("unreadable batch reply")


def _settle(item: _Item[Any], outcome: BaseException) -> None:
    if not item.future.done():
        item.future.set_exception(outcome)


async def _into(item: _Item[R], work: Awaitable[R]) -> None:
    try:
        result = await work
    except Exception as exc:  # a HandshakeError, or a bug: the caller sees it either way
        _settle(item, exc)
        return
    if not item.future.done():
        item.future.set_result(result)
