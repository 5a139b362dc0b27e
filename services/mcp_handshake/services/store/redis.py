"""The Redis connection every part of the store shares, in every production shape.

One client per process, from the settings: a single Redis (``redis://`` or
``rediss://``), a master found through Sentinel, or a Redis Cluster. TLS (a
private CA, a client certificate) and ACL users apply to all three. Every shape
fails fast: a store that stops answering becomes ``unavailable`` in well under
2 s, and the client reconnects by itself (to the new master after a failover).
Passwords are never part of a message, a log line or a ``repr``.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import unquote, urlsplit

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.connection import parse_url
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisClusterException, RedisError

from mcp_handshake.shared.natsconn import redact
from mcp_handshake.shared.settings import Settings

from .resp import Resp

__all__ = [
    "POOL_SIZE",
    "POOL_WAIT_S",
    "BoundedCluster",
    "Client",
    "SentinelClient",
    "StoreError",
    "lean_connection",
    "redis_client",
    "urls",
    "where",
]

#: Either client shape; the store uses only what both offer.
Client = Redis | RedisCluster
#: What a failing store raises: redis-py's cluster client raises some errors (no node
#: reachable, a slot not covered) outside ``RedisError``.
StoreError = (RedisError, RedisClusterException)

#: Connections per process (per node in a cluster). A burst beyond it waits (below).
POOL_SIZE = 256
#: How long a command may wait for a free pooled connection. A healthy Redis frees
#: one within milliseconds, so only a store that stopped answering reaches this, and
#: then the wait ends in ``ConnectionError``: ``unavailable``, never execution.
POOL_WAIT_S = 2.0
#: Per-command socket limits: a dead or partitioned node is noticed within a second.
SOCKET_TIMEOUT_S = 1.0
CONNECT_TIMEOUT_S = 0.5


def _retry() -> Retry:
    # One immediate retry: a pooled connection broken by a restart or a failover is
    # replaced at once. Safe for every script we run (a re-run consume finds the token
    # used and its proof's jti claimed). It runs on the connection already taken, so it
    # never waits for the pool.
    return Retry(NoBackoff(), 1)


def urls(settings: Settings) -> list[str]:
    urls = [u.strip() for u in settings.redis_url.split(",") if u.strip()]
    if not urls:
        raise ValueError("HANDSHAKE_REDIS_URL is empty")
    for url in urls:
        if urlsplit(url).scheme not in {"redis", "rediss"}:
            raise ValueError(f"Redis URL {redact(url)} must start with redis:// or rediss://")
    return urls


def _tls(settings: Settings, tls: bool) -> dict[str, Any]:
    """ssl_* keyword arguments for a ``rediss://`` URL; TLS files without it are refused."""
    files = (settings.redis_tls_ca, settings.redis_tls_cert, settings.redis_tls_key)
    if not tls:
        if any(files):
            raise ValueError("HANDSHAKE_REDIS_TLS_* need a rediss:// URL")
        return {}
    options: dict[str, Any] = {}
    if settings.redis_tls_ca is not None:
        options["ssl_ca_certs"] = str(settings.redis_tls_ca)
    if settings.redis_tls_cert is not None:
        options["ssl_certfile"] = str(settings.redis_tls_cert)
        if settings.redis_tls_key is not None:
            options["ssl_keyfile"] = str(settings.redis_tls_key)
    return options


def _credentials(settings: Settings, url: str) -> dict[str, Any]:
    """User and password: the settings' (``HANDSHAKE_REDIS_USERNAME``/``_PASSWORD*``)
    over the URL's."""
    parts = urlsplit(url)
    username = settings.redis_username or (unquote(parts.username) if parts.username else None)
    password = settings.redis_password()
    if password is None and parts.password is not None:
        password = unquote(parts.password)
    return {"username": username or None, "password": password}


def _common(settings: Settings, url: str) -> dict[str, Any]:
    return {
        **_credentials(settings, url),
        **_tls(settings, urlsplit(url).scheme == "rediss"),
        "socket_timeout": SOCKET_TIMEOUT_S,
        "socket_connect_timeout": CONNECT_TIMEOUT_S,
        "health_check_interval": 0,
    }


def lean_connection(settings: Settings) -> Resp | None:
    """The hot path's connection (:mod:`.resp`) to a single Redis, as the settings
    describe it for redis-py; ``None`` for Sentinel and Cluster."""
    if settings.redis_mode in ("cluster", "sentinel"):
        return None
    url = urls(settings)[0]
    parts = urlsplit(url)
    tls = None
    if parts.scheme == "rediss":  # as redis-py's SSL connection: verified, hostname checked
        tls = ssl.create_default_context()
        tls.check_hostname, tls.verify_mode = True, ssl.CERT_REQUIRED
        if settings.redis_tls_ca is not None:
            tls.load_verify_locations(str(settings.redis_tls_ca))
        if settings.redis_tls_cert is not None:
            key = settings.redis_tls_key
            tls.load_cert_chain(str(settings.redis_tls_cert), str(key) if key else None)
    db = parts.path.strip("/")
    return Resp(parts.hostname or "localhost", parts.port or 6379,
                **_credentials(settings, url), db=int(db) if db.isdigit() else 0, tls=tls,
                timeout=SOCKET_TIMEOUT_S, connect_timeout=CONNECT_TIMEOUT_S)  # fmt: skip


def redis_client(settings: Settings) -> Client:
    """The client the settings describe (``redis_mode``). Nothing connects until the
    first command; :func:`check_redis` makes that first contact at start-up."""
    if settings.redis_mode == "cluster":
        return _cluster(settings)
    if settings.redis_mode == "sentinel":
        return _sentinel(settings)
    return _standalone(settings)


def _standalone(settings: Settings) -> Redis:
    """The pool waits (bounded) instead of refusing when all its connections are busy:
    a non-waiting pool raised "Too many connections" under a burst and turned a healthy
    store into false ``unavailable`` replies."""
    url = urls(settings)[0]
    options: dict[str, Any] = {**parse_url(url), **_common(settings, url)}
    pool = BlockingConnectionPool(
        max_connections=POOL_SIZE, timeout=POOL_WAIT_S, retry=_retry(), **options
    )
    return Redis.from_pool(pool)


class _BlockingSentinelPool(SentinelConnectionPool, BlockingConnectionPool):
    """The master's pool through Sentinel, waiting (bounded) for a free connection like
    the single-Redis pool."""


class SentinelClient(Redis):
    """The master's client; closing it also closes the connections to the sentinels."""

    watched_by: Sentinel | None = None

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        await super().aclose(close_connection_pool)
        if self.watched_by is not None:
            await self.watched_by.aclose()


def _hostport(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"Redis sentinel {address!r} must be host:port")
    return host.strip("[]"), int(port)


def _sentinel(settings: Settings) -> Redis:
    url = urls(settings)[0]
    common = _common(settings, url)
    tls = urlsplit(url).scheme == "rediss"
    path = urlsplit(url).path.strip("/")
    sentinel_auth: dict[str, Any] = {"username": settings.redis_sentinel_username}
    if settings.redis_sentinel_password_file is not None:
        sentinel_auth["password"] = settings.redis_sentinel_password_file.read_text().strip()
    sentinel_kwargs = {
        **{k: v for k, v in common.items() if k not in {"username", "password"}},
        **sentinel_auth,
        "ssl": tls,
        "retry": _retry(),
    }
    # redis-py < 8 leaves Sentinel untyped; newer releases type it (either passes).
    sentinel = Sentinel(  # type: ignore[no-untyped-call, unused-ignore]
        [_hostport(s) for s in settings.redis_sentinels],
        sentinel_kwargs=sentinel_kwargs,
        **common,
        ssl=tls,
        db=int(path) if path.isdigit() else 0,
    )
    client: SentinelClient = sentinel.master_for(
        settings.redis_sentinel_master or "",
        redis_class=SentinelClient,
        connection_pool_class=_BlockingSentinelPool,
        max_connections=POOL_SIZE,
        timeout=POOL_WAIT_S,
        retry=_retry(),
    )
    client.watched_by = sentinel
    return client


class BoundedCluster(RedisCluster):
    """redis-py's cluster client, bounded like the single-Redis pool.

    A node's pool in redis-py does not wait: past its ``max_connections`` a command
    fails at once (``MaxConnectionsError``), so a burst of healthy traffic turned into
    ``unavailable`` replies. Here at most ``IN_FLIGHT`` commands (and batches) run at
    once per process, below any node's pool size; the rest wait, up to
    ``POOL_WAIT_S``. And when redis-py tears a connection down under a command (its
    reconnect handling closes free connections while another command takes one), the
    event loop's "transport closed" ``RuntimeError`` is a ``ConnectionError``:
    ``unavailable``, never ``internal``.
    """

    IN_FLIGHT = POOL_SIZE * 3 // 4

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._in_flight = asyncio.Semaphore(self.IN_FLIGHT)

    @contextlib.asynccontextmanager
    async def bounded(self) -> AsyncIterator[None]:
        """One slot of the process's in-flight bound, for a command or a batch."""
        try:
            async with asyncio.timeout(POOL_WAIT_S):
                await self._in_flight.acquire()
        except TimeoutError:
            raise RedisConnectionError("no Redis connection became free in time") from None
        try:
            yield
        except RuntimeError as exc:  # a transport closed under the command
            raise RedisConnectionError("Redis connection closed during a command") from exc
        finally:
            self._in_flight.release()

    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        async with self.bounded():
            return await super().execute_command(*args, **kwargs)


def _cluster(settings: Settings) -> RedisCluster:
    """Redis Cluster from its startup nodes (see :class:`BoundedCluster`)."""
    startup = urls(settings)
    nodes = [ClusterNode(urlsplit(u).hostname or "127.0.0.1", urlsplit(u).port or 6379)
             for u in startup]  # fmt: skip
    common = _common(settings, startup[0])
    return BoundedCluster(
        startup_nodes=nodes,
        ssl=urlsplit(startup[0]).scheme == "rediss",
        max_connections=POOL_SIZE,
        retry=_retry(),
        **common,
    )


def where(settings: Settings) -> str:
    """The store's location, fit to print (credentials redacted)."""
    if settings.redis_mode == "sentinel":
        return f"sentinel master {settings.redis_sentinel_master} via " + ",".join(
            settings.redis_sentinels
        )
    return redact(settings.redis_url)
