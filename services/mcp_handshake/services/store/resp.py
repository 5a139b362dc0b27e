"""One multiplexed RESP connection per process for the hot path on a single Redis.

redis-py spends 140-200 µs of Python CPU on every command here (its pool, a task
per socket write under a timeout, retry and observability wrappers), more than
Redis itself and more than the bytes on the wire; a handshake makes three such
calls in series (the token issue, the consume, the executor's dispatch marker).
This connection writes the commands of each loop turn together, on one socket
shared by every request of the process (Redis answers in order, so replies are
matched first in, first out), and parses replies with hiredis, the C parser
redis-py itself uses: 30-60 µs a command, a pipeline of four in one write.

What redis-py gave the store, this keeps: the same URL, user, password and TLS
files; a command unanswered for ``timeout`` seconds, or a broken connection,
fails every command waiting on that connection with redis-py's
``TimeoutError``/``ConnectionError`` (so the store answers ``unavailable``:
fail closed) and the next command connects again; a command that failed so is
sent once more on a fresh connection (redis-py's one immediate retry, which
every script of the store is safe to repeat). Error replies are redis-py's
``ResponseError`` (``NoScriptError`` for ``NOSCRIPT``). Used for a single Redis
(``HANDSHAKE_REDIS_MODE=single``); Sentinel and Cluster keep redis-py, which
follows their topology.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from collections.abc import Sequence
from typing import Any, cast

import hiredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

__all__ = ["Resp"]

Arg = str | bytes | int | float


def _error(message: str) -> ResponseError:
    return NoScriptError(message) if message.startswith("NOSCRIPT") else ResponseError(message)


def _packed(commands: Sequence[Sequence[Arg]]) -> bytes:
    # Floats as redis-py sends them (repr), not in hiredis's shorter format.
    return b"".join(
        hiredis.pack_command(cast(Any, tuple(repr(a) if isinstance(a, float) else a for a in args)))
        for args in commands
    )


class _Link(asyncio.Protocol):
    """One connection: replies resolve the waiting futures in order."""

    def __init__(self, timeout: float) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self._reader = hiredis.Reader(replyError=_error)
        self._waiting: deque[tuple[asyncio.Future[Any], float]] = deque()
        self._timeout = timeout
        self._timer: asyncio.TimerHandle | None = None
        self._writable = asyncio.Event()
        self._writable.set()
        #: Commands of this loop turn, written together at its end (one syscall).
        self._out: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is no subclass

    def connection_lost(self, exc: Exception | None) -> None:
        self.fail(RedisConnectionError("Redis connection closed"))

    def pause_writing(self) -> None:
        self._writable.clear()

    def resume_writing(self) -> None:
        self._writable.set()

    def data_received(self, data: bytes) -> None:
        self._reader.feed(data)
        waiting = self._waiting
        try:
            while waiting:
                reply = self._reader.gets()
                if reply is False:
                    return
                fut = waiting.popleft()[0]
                if not fut.done():
                    fut.set_result(reply)
        except hiredis.ProtocolError:
            self.fail(RedisConnectionError("Redis sent something that is not RESP"))

    async def send(self, commands: Sequence[Sequence[Arg]]) -> list[asyncio.Future[Any]]:
        """Write ``commands`` (with every other command of this loop turn, at its end);
        one future per reply (an error reply is a ``ResponseError`` result, not an
        exception)."""
        if not self._writable.is_set():
            await self._writable.wait()
        if self.closed or self.transport is None:
            raise RedisConnectionError("Redis connection closed")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._timeout
        futures = [loop.create_future() for _ in commands]
        self._waiting.extend((f, deadline) for f in futures)
        if not self._out:
            loop.call_soon(self._flush)
        self._out.append(_packed(commands))
        if self._timer is None:
            self._timer = loop.call_at(deadline, self._check)
        return futures

    def _flush(self) -> None:
        out, self._out = self._out, []
        if not self.closed and self.transport is not None:
            self.transport.write(out[0] if len(out) == 1 else b"".join(out))

    def _check(self) -> None:
        """Fail the connection if its oldest command is past its deadline."""
        self._timer = None
        if not self._waiting:
            return
        loop = asyncio.get_running_loop()
        deadline = self._waiting[0][1]
        if deadline <= loop.time():
            self.fail(RedisTimeoutError("Redis did not answer in time"))
        else:
            self._timer = loop.call_at(deadline, self._check)

    def fail(self, exc: Exception) -> None:
        """Close the connection; every command waiting on it raises ``exc``."""
        self.closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        while self._waiting:
            fut = self._waiting.popleft()[0]
            if not fut.done():
                fut.set_exception(exc)
        self._writable.set()
        if self.transport is not None:
            self.transport.close()


class Resp:
    """Commands to one Redis over one shared connection (see the module docstring)."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        username: str | None = None,
        password: str | None = None,
        db: int = 0,
        tls: ssl.SSLContext | None = None,
        timeout: float = 1.0,
        connect_timeout: float = 0.5,
    ) -> None:
        self._address = (host, port)
        self._auth = [a for a in (username, password) if a] if password else []
        self._db = db
        self._tls = tls
        self._timeout = timeout
        self._connect_timeout = connect_timeout
        self._link: _Link | None = None
        self._connecting = asyncio.Lock()

    def __repr__(self) -> str:
        host, port = self._address
        return f"Resp({host}:{port})"

    async def execute(self, *args: Arg) -> Any:
        """One command's reply; an error reply is raised."""
        (reply,) = await self.execute_many([args])
        if isinstance(reply, ResponseError):
            raise reply
        return reply

    async def execute_many(self, commands: Sequence[Sequence[Arg]]) -> list[Any]:
        """The replies to ``commands``, sent in one write; error replies are returned as
        ``ResponseError`` instances. A broken or silent connection is retried once."""
        try:
            return await self._round(commands)
        except (RedisConnectionError, RedisTimeoutError):
            return await self._round(commands)

    async def _round(self, commands: Sequence[Sequence[Arg]]) -> list[Any]:
        link = self._link
        if link is None or link.closed:
            link = await self._connect()
        replies, failed = [], None
        for fut in await link.send(commands):
            try:  # every reply is read, so no failed future goes unretrieved
                replies.append(await fut)
            except (RedisConnectionError, RedisTimeoutError) as exc:
                failed = failed or exc
        if failed is not None:
            raise failed
        return replies

    async def _connect(self) -> _Link:
        async with self._connecting:
            if self._link is not None and not self._link.closed:
                return self._link
            loop = asyncio.get_running_loop()
            host, port = self._address
            try:
                async with asyncio.timeout(self._connect_timeout):
                    _, link = await loop.create_connection(
                        lambda: _Link(self._timeout), host, port, ssl=self._tls,
                        server_hostname=host if self._tls else None,
                    )  # fmt: skip
            except (OSError, TimeoutError, ssl.SSLError) as exc:
                why = type(exc).__name__
                raise RedisConnectionError(f"cannot connect to Redis ({why})") from None
            hello: list[tuple[Arg, ...]] = [("AUTH", *self._auth)] if self._auth else []
            if self._db:
                hello.append(("SELECT", self._db))
            for fut in await link.send(hello):
                if isinstance(await fut, ResponseError):
                    link.fail(RedisConnectionError("Redis refused the connection"))
                    raise RedisConnectionError("Redis refused the credentials or the database")
            self._link = link
            return link

    async def aclose(self) -> None:
        if self._link is not None:
            self._link.fail(RedisConnectionError("closed"))
            self._link = None
