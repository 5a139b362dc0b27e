"""JetStream publishes whose acknowledgements come back on one wildcard subscription.

nats-py's ``js.publish`` goes through the generic request path: a random reply
token, ``asyncio.wait_for`` and ``json.loads`` into a many-field ``PubAck`` for
every publish. Here each publish gets the next number under the connection's
own inbox prefix (so only this identity can read the acks), its ack is decoded
by msgspec into the three fields we read, and the wait is bounded by
``asyncio.timeout``. Many publishes may be outstanding at once: the audit
outbox bounds how many. Errors are nats-py's own (a stream error is
``nats.js.errors.APIError``, no stream ``NoStreamResponseError``, no ack in
time ``TimeoutError``), so callers handle both paths alike.

"""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js.errors import APIError, NoStreamResponseError

__all__ = ["AckPublisher", "PubAck"]

_NO_RESPONDERS = "503"


class PubAck(msgspec.Struct):
    stream: str = ""
    seq: int = 0
    duplicate: bool = False
    error: dict[str, Any] | None = None


_decode = msgspec.json.Decoder(PubAck).decode


class AckPublisher:
    """Publishes to JetStream and waits for each ack; see the module docstring."""

    def __init__(self, nc: NATS) -> None:
        self._nc = nc
        self._prefix = ""
        self._sub: Any = None
        self._starting: asyncio.Lock | None = None
        self._next = 0
        self._waiting: dict[str, asyncio.Future[PubAck]] = {}

    async def _start(self) -> None:
        self._starting = self._starting or asyncio.Lock()
        async with self._starting:
            if self._sub is None:
                prefix = self._nc.new_inbox()
                self._sub = await self._nc.subscribe(f"{prefix}.*", cb=self._on_ack)
                self._prefix = f"{prefix}."

    async def publish(
        self, subject: str, data: bytes, *, headers: dict[str, str], timeout: float
    ) -> PubAck:
        if self._sub is None:
            await self._start()
        self._next += 1
        token = str(self._next)
        fut: asyncio.Future[PubAck] = asyncio.get_running_loop().create_future()
        self._waiting[token] = fut
        try:
            await self._nc.publish(subject, data, reply=self._prefix + token, headers=headers)
            async with asyncio.timeout(timeout):
                return await fut
        finally:
            self._waiting.pop(token, None)

    async def _on_ack(self, msg: Msg) -> None:
        fut = self._waiting.get(msg.subject[len(self._prefix) :])
        if fut is None or fut.done():
            return  # late: its publish already timed out
        if msg.headers and msg.headers.get("Status") == _NO_RESPONDERS:
            fut.set_exception(NoStreamResponseError())
            return
        try:
            ack = _decode(msg.data)
        except msgspec.DecodeError:
            fut.set_exception(APIError(description="unreadable publish acknowledgement"))
            return
        if ack.error is not None:
            err = ack.error
            fut.set_exception(APIError(code=err.get("code"), err_code=err.get("err_code"),
                                       description=err.get("description")))  # fmt: skip
        else:
            fut.set_result(ack)
