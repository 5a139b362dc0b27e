"""The one endpoint wrapper every worker uses.

It does, in this order, for every message: size check (before parsing),
decoding into the endpoint's request Struct, calling the handler, encoding
the reply, and mapping errors to protocol error replies. Handlers are plain
``async def handle(request, deps) -> Struct`` functions that raise
``HandshakeError``; they never catch-all. Anything else becomes ``internal``
with no detail on the wire (the traceback goes to the log).

Messages are handled concurrently (one task each, bounded by a semaphore):
a NATS subscription callback alone would serve one request at a time.
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

from mcp_handshake.services.runtime.context import RequestContext, open_context
from mcp_handshake.services.runtime.telemetry import Metrics
from mcp_handshake.shared import tracing
from mcp_handshake.shared.errors import (
    BadRequest,
    HandshakeError,
    InternalError,
    PayloadTooLarge,
)
from mcp_handshake.shared.wire import ErrorDetail, ErrorReply

__all__ = ["Endpoint", "EndpointStats", "Request", "error_reply"]

log = logging.getLogger(__name__)

T = TypeVar("T")

ERROR_HEADER = "Nats-Service-Error"
ERROR_CODE_HEADER = "Nats-Service-Error-Code"

_encode = msgspec.json.encode


@dataclass(slots=True)
class Request(Generic[T]):
    """One decoded request: its body Struct, raw bytes and headers."""

    body: T
    data: bytes
    headers: dict[str, str]
    subject: str

    def header(self, name: str) -> str | None:
        value = self.headers.get(name)
        if value is None:
            lowered = name.lower()
            for key, val in self.headers.items():
                if key.lower() == lowered:
                    return val
        return value


def error_reply(err: HandshakeError) -> tuple[bytes, dict[str, str]]:
    body = ErrorReply(
        ErrorDetail(
            code=err.code,
            message=err.message,
            transaction_id=err.transaction_id,
            retryable=err.retryable,
            retry_after_s=err.retry_after_s,
        )
    )
    return _encode(body), {ERROR_CODE_HEADER: str(err.status), ERROR_HEADER: err.code}


@dataclass(slots=True)
class EndpointStats:
    num_requests: int = 0
    num_errors: int = 0
    processing_time_ns: int = 0
    last_error: str = ""
    outcomes: Counter[str] = field(default_factory=Counter)


Handler = Callable[[Request[Any]], Awaitable[msgspec.Struct]]
#: Called after every request with its context and outcome code ("ok" or an error code).
OutcomeHook = Callable[[RequestContext, str], None]


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
        on_done: OutcomeHook | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.name = name
        self.subject = subject
        self.queue_group = queue_group
        self._decoder = msgspec.json.Decoder(request_type)
        self._handler = handler
        self._max_payload = max_payload
        self._slots = asyncio.Semaphore(max_inflight)
        self._tasks: set[asyncio.Task[None]] = set()
        self._sub: Any = None
        self._nc: NATS | None = None
        self._on_done = on_done
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
        ctx = open_context(self.name)
        headers: dict[str, str] | None = None
        with tracing.process_span(self.subject, msg.headers) as span:
            ctx.trace_id = tracing.trace_id()
            try:
                reply = await self._dispatch(msg)
                data = _encode(reply)
                code = "ok"
            except HandshakeError as err:
                data, headers = error_reply(err)
                code = err.code
            except Exception:
                log.exception("unhandled error on %s", self.name)
                data, headers = error_reply(InternalError())
                code = InternalError.code
            if span is not None:
                for key, value in (
                    ("handshake.transaction_id", ctx.txn),
                    ("handshake.tool", ctx.tool),
                    ("handshake.tier", ctx.tier),
                ):
                    if value:
                        span.set_attribute(key, value)
                tracing.set_error(span, code)
        stats = self.stats
        stats.num_requests += 1
        stats.outcomes[code] += 1
        if code != "ok":
            stats.num_errors += 1
            stats.last_error = code
        elapsed = time.perf_counter_ns() - start
        stats.processing_time_ns += elapsed
        if self._metrics is not None:
            self._metrics.request(self.name, code, elapsed / 1e6)
        if self._on_done is not None:
            try:
                self._on_done(ctx, code)
            except Exception:
                log.exception("outcome hook failed on %s", self.name)
        if msg.reply and self._nc is not None:
            try:
                await self._nc.publish(msg.reply, data, headers=headers)
            except Exception:
                log.warning("could not send a reply on %s", self.name, exc_info=True)

    async def _dispatch(self, msg: Msg) -> msgspec.Struct:
        data = msg.data
        if len(data) > self._max_payload:
            raise PayloadTooLarge(f"request body over {self._max_payload} bytes")
        try:
            body = self._decoder.decode(data or b"{}")
        except msgspec.ValidationError as exc:
            raise BadRequest(f"invalid request: {exc}") from None
        except msgspec.DecodeError:
            raise BadRequest("request body is not a JSON object") from None
        return await self._handler(Request(body, data, msg.headers or {}, msg.subject))
