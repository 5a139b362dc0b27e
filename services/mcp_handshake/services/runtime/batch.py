"""Running a batch's operations through the single-operation handlers.

A batch endpoint verifies the session once (the endpoint wrapper does), then
builds one :class:`Request` per operation, with the batch's caller, and runs
the operation's own handler on it, all concurrently. Each operation's outcome
(its reply, or the error it raised) goes to the single endpoint's audit hook,
so every operation leaves exactly the audit events it leaves alone, and becomes
that operation's result: the reply body, or the error body. The hooks run once
every operation has ended, before the batch's reply, inside ``Audit.grouped``:
each event is its own message, but the batch's go to the stream together.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import msgspec

from mcp_handshake.services.runtime.audit import Audit, unique
from mcp_handshake.services.runtime.endpoint import AuditHook, Outcome, Request
from mcp_handshake.shared.batch import BatchReply, error_result
from mcp_handshake.shared.errors import HandshakeError, InternalError, PayloadTooLarge

__all__ = ["batch_audit", "check_size", "op_request", "run_batch"]

log = logging.getLogger(__name__)

T = TypeVar("T")


def check_size(count: int, limit: int) -> None:
    """``payload_too_large`` for the whole request (before anything is done) past ``limit``."""
    if count == 0:
        return
    if count > limit:
        raise PayloadTooLarge(f"batch of {count} operations; at most {limit}")


def op_request(batch: Request[Any], body: T, headers: dict[str, str]) -> Request[T]:
    """One operation's request: its own body and headers, the batch's verified caller and
    sender (the reply inbox names the NATS identity that policy sees as the agent)."""
    return Request(body, b"", headers, batch.subject, auth=batch.auth, reply=batch.reply)


async def run_batch(
    requests: Sequence[Request[Any]],
    handler: Callable[[Request[Any], int], Awaitable[msgspec.Struct]],
    audit: AuditHook | None,
    events: Audit | None = None,
) -> BatchReply:
    """Every operation through ``handler(request, index)``, concurrently; one result each.
    ``audit`` is called for each operation that ended (also when the batch is cancelled
    midway), the events it emits on ``events`` grouped."""
    outcomes: list[Outcome | None] = [None] * len(requests)

    async def one(i: int, req: Request[Any]) -> None:
        try:
            outcomes[i] = await handler(req, i)
        except HandshakeError as err:
            outcomes[i] = err
        except Exception:
            log.exception("unhandled error in a batch operation")
            outcomes[i] = InternalError()

    try:
        await asyncio.gather(*(one(i, r) for i, r in enumerate(requests)))
    finally:
        if audit is not None:
            _audited(requests, outcomes, audit, events)
    return BatchReply(results=[error_result(o) if isinstance(o, HandshakeError) else o
                               for o in outcomes])  # fmt: skip


def _audited(
    requests: Sequence[Request[Any]],
    outcomes: list[Outcome | None],
    audit: AuditHook,
    events: Audit | None,
) -> None:
    with events.grouped() if events is not None else contextlib.nullcontext():
        for req, outcome in zip(requests, outcomes, strict=True):
            if outcome is None:  # cancelled: no outcome, as a cancelled single call
                continue
            try:
                audit(req, outcome)
            except Exception:
                log.exception("audit hook failed in a batch operation")


def batch_audit(audit: Audit, event: str) -> AuditHook:
    """``event`` (a ``*.denied``) for a batch refused as a whole (too large, bad body,
    no session); a batch that ran audited each operation already."""

    def hook(req: Request[Any] | None, outcome: Outcome) -> None:
        if isinstance(outcome, BatchReply):
            return
        sub = req.auth.sub if req is not None and req.auth is not None else None
        code = getattr(outcome, "code", "internal")
        audit.emit(audit.event(event, code, unique=unique(), sub=sub, detail="batch"))

    return hook
