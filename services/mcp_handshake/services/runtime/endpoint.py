"""The one endpoint wrapper every worker uses.

It does, in this order, for every message: size check (before parsing),
decoding into the endpoint's request Struct, session verification (for
endpoints declared with ``auth=True``; the handler then reads a typed
``request.caller``), calling the handler, encoding the reply, mapping errors
to protocol error replies, and handing the outcome (the reply Struct or the
raised error) to the endpoint's own audit hook. Handlers are plain
``async def handle(request) -> Struct`` functions that raise
``HandshakeError``; they never catch-all. Anything else becomes ``internal``
with no detail on the wire (the traceback goes to the log).

Messages are handled concurrently (one task each, bounded by a semaphore):
a NATS subscription callback alone would serve one request at a time. On
endpoints with sessions, each caller (session ``sub``) may have at most
``max_inflight_per_caller`` of those tasks past session verification; the next
one is answered ``rate_limited`` at once, so one caller's burst cannot take the
worker from the others.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import msgspec
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from mcp_handshake.services.core.policy import Caller
from mcp_handshake.services.core.sessions import SessionVerifier
from mcp_handshake.services.runtime.context import open_log_context
from mcp_handshake.services.runtime.telemetry import Metrics
from mcp_handshake.shared import tracing
from mcp_handshake.shared.errors import (
    BadRequest,
    HandshakeError,
    InternalError,
    PayloadTooLarge,
    RateLimited,
)
from mcp_handshake.shared.nesting import MAX_DEPTH, too_deep
from mcp_handshake.shared.protocol import AUTHORIZATION_HEADER, encode_error

__all__ = ["AuditHook", "Endpoint", "EndpointStats", "Outcome", "Request"]

log = logging.getLogger(__name__)

T = TypeVar("T")

_encode = msgspec.json.encode

#: The hint sent with a per-caller ``rate_limited``: a slot frees as soon as one of
#: the caller's requests finishes, so the wait is short.
CALLER_RETRY_AFTER_S = 0.5


@dataclass(slots=True)
class Request(Generic[T]):
    """One decoded request: its body Struct, raw bytes, headers, and verified caller."""

    body: T
    data: bytes
    headers: dict[str, str]
    subject: str
    #: The verified session's caller (endpoints declared with ``auth=True``).
    auth: Caller | None = None
    #: The reply subject: its inbox prefix (``_INBOX.<user>.``) names the sender's
    #: NATS identity, the only one that may read the reply.
    reply: str = ""
    #: What the handler decided, for the audit hook (policy verdict, ids, set hash).
    facts: dict[str, Any] = field(default_factory=dict)

    @property
    def nats_user(self) -> str | None:
        """The NATS identity the reply goes to (``_INBOX.<user>.``): the sender's own
        under the shipped permission model (docs/policy.md says what that proves)."""
        parts = self.reply.split(".")
        return parts[1] if len(parts) > 2 and parts[0] == "_INBOX" else None

    @property
    def caller(self) -> Caller:
        if self.auth is None:  # a handler on an endpoint without auth=True
            raise InternalError()
        return self.auth

    def header(self, name: str) -> str | None:
        value = self.headers.get(name)
        if value is None:
            lowered = name.lower()
            for key, val in self.headers.items():
                if key.lower() == lowered:
                    return val
        return value


@dataclass(slots=True)
class EndpointStats:
    num_requests: int = 0
    num_errors: int = 0
    processing_time_ns: int = 0
    last_error: str = ""
    outcomes: Counter[str] = field(default_factory=Counter)


#: What a request ended with: the reply Struct, or the error raised.
Outcome = msgspec.Struct | HandshakeError
Handler = Callable[[Request[Any]], Awaitable[msgspec.Struct]]
#: Called after every request with the request (``None`` when it could not be
#: decoded) and its outcome; records audit events and metrics.
AuditHook = Callable[[Request[Any] | None, Outcome], None]


class Endpoint:
    """A subject served in a queue group by one handler."""

    def __init__(
        self,
        name: str,
        subject: str,
        queue_group: str,
        request_type: type[Any],
        handler: Handler,
        *,
        max_payload: int,
        max_inflight: int = 1024,
        max_inflight_per_caller: int | None = None,
        require: tuple[str, ...] = (),
        sessions: SessionVerifier | None = None,
        audit: AuditHook | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        """``require`` names headers without which the request is a ``bad_request``;
        ``sessions`` makes the endpoint verify the session (``Authorization``) before
        the handler runs; ``audit`` is the endpoint's own outcome hook;
        ``max_inflight_per_caller`` caps one verified caller's concurrent requests."""
        self.name = name
        self.subject = subject
        self.queue_group = queue_group
        self._decoder = msgspec.json.Decoder(request_type)
        self._handler = handler
        self._max_payload = max_payload
        self._slots = asyncio.Semaphore(max_inflight)
        self._per_caller = max_inflight_per_caller
        #: Requests in flight per caller ``sub``; a key is removed when it drops to 0.
        self._by_caller: dict[str, int] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._sub: Any = None
        self._nc: NATS | None = None
        self._require = require
        self._sessions = sessions
        self._audit = audit
        self._metrics = metrics
        self.stats = EndpointStats()

    async def start(self, nc: NATS) -> None:
        self._nc = nc
        self._sub = await nc.subscribe(self.subject, queue=self.queue_group, cb=self._on_msg)

    async def stop(self, timeout: float = 10.0) -> None:
        """Stop taking requests and let the ones in flight finish."""
        if self._sub is not None:
            try:
                await self._sub.unsubscribe()
            except Exception:  # connection already closed
                log.debug("unsubscribe failed", exc_info=True)
            self._sub = None
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=timeout)

    async def _on_msg(self, msg: Msg) -> None:
        await self._slots.acquire()
        task = asyncio.get_running_loop().create_task(self._serve(msg))
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._slots.release()

    async def _serve(self, msg: Msg) -> None:
        start = time.perf_counter_ns()
        headers: dict[str, str] | None = None
        req: Request[Any] | None = None
        outcome: Outcome
        with tracing.process_span(self.subject, msg.headers) as span:
            try:
                req = self._decode(msg)
                outcome = await self._call(req)
                data = _encode(outcome)
                code = "ok"
            except HandshakeError as err:
                outcome = err
                data, headers = encode_error(err)
                code = err.code
            except Exception:
                log.exception("unhandled error on %s", self.name)
                outcome = InternalError()
                data, headers = encode_error(outcome)
                code = outcome.code
            if span is not None:
                _describe_span(span, req, outcome)
                tracing.set_error(span, code)
        self._count(code, time.perf_counter_ns() - start)
        if self._audit is not None:
            try:
                self._audit(req, outcome)
            except Exception:
                log.exception("audit hook failed on %s", self.name)
        if msg.reply and self._nc is not None:
            try:
                await self._nc.publish(msg.reply, data, headers=headers)
            except Exception:
                log.warning("could not send a reply on %s", self.name, exc_info=True)

    def _count(self, code: str, elapsed_ns: int) -> None:
        stats = self.stats
        stats.num_requests += 1
        stats.outcomes[code] += 1
        if code != "ok":
            stats.num_errors += 1
            stats.last_error = code
        stats.processing_time_ns += elapsed_ns
        if self._metrics is not None:
            self._metrics.request(self.name, code, elapsed_ns / 1e6)

    def _decode(self, msg: Msg) -> Request[Any]:
        data = msg.data
        if len(data) > self._max_payload:
            raise PayloadTooLarge(f"request body over {self._max_payload} bytes")
        # Every way a body can fail to decode is the sender's: bad_request, no traceback.
        try:
            body = self._decoder.decode(data or b"{}")
        except msgspec.ValidationError as exc:
            raise BadRequest(f"invalid request: {exc}") from None
        except UnicodeDecodeError:
            raise BadRequest("request body is not valid UTF-8") from None
        except RecursionError:
            raise BadRequest(f"request body nests deeper than {MAX_DEPTH} levels") from None
        except (msgspec.DecodeError, ValueError):
            raise BadRequest("request body is not a JSON object") from None
        if too_deep(data):  # after decoding: the scan needs well-formed JSON
            raise BadRequest(f"request body nests deeper than {MAX_DEPTH} levels")
        req = Request(body, data, msg.headers or {}, msg.subject, reply=msg.reply or "")
        open_log_context(_txn_of(body), tracing.trace_id())
        return req

    async def _call(self, req: Request[Any]) -> msgspec.Struct:
        for name in self._require:
            if not req.header(name):
                raise BadRequest(f"missing {name} header")
        if self._sessions is not None:
            req.auth = self._sessions.verify(req.header(AUTHORIZATION_HEADER))
            if self._per_caller is not None:
                return await self._capped(req, req.auth.sub, self._per_caller)
        return await self._handler(req)

    async def _capped(self, req: Request[Any], sub: str, cap: int) -> msgspec.Struct:
        counts = self._by_caller
        n = counts.get(sub, 0)
        if n >= cap:
            raise RateLimited(
                f"too many requests in flight (at most {cap} per caller)",
                retry_after_s=CALLER_RETRY_AFTER_S,
            )
        counts[sub] = n + 1
        try:
            return await self._handler(req)
        finally:
            left = counts[sub] - 1
            if left:
                counts[sub] = left
            else:
                del counts[sub]


def _txn_of(body: Any) -> str | None:
    return getattr(body, "transaction_id", None) or getattr(body, "txn", None)


def _describe_span(span: Any, req: Request[Any] | None, outcome: Outcome) -> None:
    body = req.body if req is not None else None
    txn = _txn_of(body) or getattr(outcome, "transaction_id", None)
    for key, value in (
        ("handshake.transaction_id", txn),
        ("handshake.tool", getattr(body, "tool", None)),
        ("handshake.tier", getattr(outcome, "tier", None)),
    ):
        if value:
            span.set_attribute(key, value)
