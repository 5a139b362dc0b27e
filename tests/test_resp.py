"""The hot path's lean Redis connection, against a real redis-server: replies matched to
their commands under concurrency, errors as redis-py raises them, credentials, a
connection broken or silent (fail closed, then connect again), TLS."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
import uvloop
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from mcp_handshake.services.store import Store
from mcp_handshake.services.store.redis import lean_connection, redis_client
from mcp_handshake.services.store.resp import Resp
from mcp_handshake.shared.settings import Settings
from tests.support.redis_certs import make_tls
from tests.support.redis_topologies import SingleRedis


def _lean(server: SingleRedis, **kw: object) -> Resp:
    conn = lean_connection(Settings(redis_url=server.url(), **kw))  # type: ignore[arg-type]
    assert conn is not None
    return conn


async def test_replies_match_their_commands_under_concurrency(single: SingleRedis) -> None:
    conn = _lean(single)
    try:
        await conn.execute_many([("SET", f"k{i}", f"v{i}") for i in range(300)])

        async def get(i: int) -> bytes:
            value: bytes = await conn.execute("GET", f"k{i}")
            return value

        got = await asyncio.gather(*(get(i) for i in range(300)))
        assert got == [f"v{i}".encode() for i in range(300)]
        assert await conn.execute("SET", "n", "1", "NX", "PX", 1000) == b"OK"
        assert await conn.execute("SET", "n", "2", "NX", "PX", 1000) is None
        assert await conn.execute("ZADD", "z", 1.0000000001, "m") == 1
        assert await conn.execute("ZSCORE", "z", "m") == b"1.0000000001"  # floats as repr
    finally:
        await conn.aclose()


async def test_error_replies_are_redis_py_errors(single: SingleRedis) -> None:
    conn = _lean(single)
    try:
        with pytest.raises(NoScriptError):
            await conn.execute("EVALSHA", "0" * 40, 0)
        await conn.execute("SET", "s", "x")
        replies = await conn.execute_many([("INCR", "s"), ("GET", "s")])
        assert isinstance(replies[0], ResponseError) and replies[1] == b"x"
        assert await conn.execute("EVAL", "return {1, 'a'}", 0) == [1, b"a"]
    finally:
        await conn.aclose()


async def test_wrong_credentials_fail_closed(single: SingleRedis) -> None:
    conn = lean_connection(Settings(redis_url=single.url(password="wrong")))
    assert conn is not None and "wrong" not in repr(conn)
    with pytest.raises(RedisConnectionError) as err:
        await conn.execute("PING")
    assert "wrong" not in str(err.value)


async def test_a_broken_connection_is_replaced(single: SingleRedis) -> None:
    """A killed connection: the command is sent once more on a new one; the server gone:
    ``ConnectionError``; back: the next command connects."""
    conn = _lean(single)
    admin = Redis.from_url(single.url())
    try:
        assert await conn.execute("PING") == b"PONG"
        await admin.client_kill_filter(_type="normal", skipme=True)
        assert await conn.execute("PING") == b"PONG"
        assert single.node is not None
        single.node.stop()
        with pytest.raises(RedisConnectionError):
            await conn.execute("PING")
        single.node.start()
        assert await conn.execute("PING") == b"PONG"
    finally:
        await admin.aclose()
        await conn.aclose()


async def test_a_silent_server_fails_in_time_then_recovers(single: SingleRedis) -> None:
    conn = _lean(single)
    admin = Redis.from_url(single.url())
    try:
        await conn.execute("PING")
        await admin.client_pause(2500)  # every client's commands wait 2.5 s
        started = time.monotonic()
        with pytest.raises(RedisTimeoutError):  # 1 s, then 1 s more on a new connection
            await conn.execute("SET", "paused", "1")
        assert time.monotonic() - started < 2.4
        await asyncio.sleep(0.8)
        assert await conn.execute("PING") == b"PONG"
    finally:
        await admin.aclose()
        await conn.aclose()


async def test_the_store_uses_it_on_a_single_redis_only(single: SingleRedis) -> None:
    store = Store.open(Settings(redis_url=single.url()))
    try:
        assert store.fast is not None and store.tokens._scripts.fast is store.fast
        assert await store.dispatches.claim("txn-a", 5.0) is True
        assert await store.dispatches.claim("txn-a", 5.0) is False
    finally:
        await store.aclose()
    cluster = Settings(redis_url=single.url(), redis_mode="cluster")
    assert lean_connection(cluster) is None


async def test_tls_with_a_client_certificate(tmp_path: Path) -> None:
    tls = make_tls(tmp_path / "tls")
    other = make_tls(tmp_path / "other")
    server = SingleRedis(tmp_path / "redis", tls=tls).start()
    try:
        files = {"redis_tls_cert": tls.client_cert, "redis_tls_key": tls.client_key}
        conn = _lean(server, redis_tls_ca=tls.ca, **files)
        assert await conn.execute("PING") == b"PONG"
        await conn.aclose()
        wrong = _lean(server, redis_tls_ca=other.ca, **files)
        with pytest.raises(RedisConnectionError):
            await wrong.execute("PING")
        plain = redis_client(Settings(redis_url=server.url(), redis_tls_ca=tls.ca, **files))
        await plain.aclose()
    finally:
        server.stop()


def test_on_uvloop_as_the_workers_run_it(tmp_path: Path) -> None:
    server = SingleRedis(tmp_path / "redis").start()

    async def run() -> None:
        conn = _lean(server)
        try:
            assert await conn.execute_many([("SET", "u", "1"), ("GET", "u")]) == [b"OK", b"1"]
            assert server.node is not None
            server.node.stop()
            with pytest.raises(RedisConnectionError):
                await conn.execute("PING")
            server.node.start()
            assert await conn.execute("PING") == b"PONG"
        finally:
            await conn.aclose()

    try:
        uvloop.run(run())
    finally:
        server.stop()
