"""Security properties, tested as attacks over raw NATS against the real servers."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import os
import socket
import struct
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import jwt
import nats
import pytest
from redis.asyncio import Redis
from redis.asyncio.client import Monitor, MonitorCommandInfo
from redis.asyncio.cluster import RedisCluster

from mcp_handshake.services.dev.devhome import IDP_KEY
from mcp_handshake.services.dev.devstack import Stack, StackSpec
from mcp_handshake.services.runtime.service import discover
from mcp_handshake.shared.keys import generate_private_key, load_private_key, public_jwk
from tests.conftest import Raw, connected

RATE = {"base": "EUR", "quote": "USD"}
# Already normalized, so an attacker can sign proofs over exactly what it sends.
INVOICE = {"customer_id": "cus_8f3k2m9q", "amount": 12.5, "currency": "EUR", "memo": None}


async def _grant(raw: Raw, session: str, tool: str, params: dict[str, Any]) -> dict[str, Any]:
    r = await raw.authorize(session, tool, params)
    assert r.error is None, r.body
    return r.body


@pytest.mark.slow
async def test_sequential_replays_are_all_refused(raw: Raw) -> None:
    alice = raw.session("alice", "billing")
    accepted = 0
    for _ in range(1000):
        g = await _grant(raw, alice, "payments.get_exchange_rate", RATE)
        first = await raw.execute(alice, g, "payments.get_exchange_rate", RATE)
        assert first.error is None, first.body
        replay = await raw.execute(alice, g, "payments.get_exchange_rate", RATE)
        assert replay.error == "invalid_transaction"
        accepted += replay.error is None
    assert accepted == 0


async def _execute_stats(operator: Raw) -> dict[str, int]:
    """Requests served so far by each execute worker process."""
    per_worker = {}
    for s in await discover(operator.nc, "STATS.handshake-execute", 0.5):
        ep = next(e for e in s["endpoints"] if e["name"] == "execute")
        per_worker[s["id"]] = ep["num_requests"]
    return per_worker


@pytest.mark.slow
async def test_concurrent_double_execute_runs_each_token_once(raw: Raw, operator: Raw) -> None:
    alice = raw.session("alice", "billing")
    before = await raw.target_stats()
    workers_before = await _execute_stats(operator)
    assert len(workers_before) >= 2, "the race must go through at least two execute processes"
    successes = 0
    refused: dict[str, int] = {}
    for _batch in range(20):
        grants = await asyncio.gather(
            *[_grant(raw, alice, "payments.create_invoice", INVOICE) for _ in range(50)]
        )
        replies = await asyncio.gather(
            *[
                raw.execute(alice, g, "payments.create_invoice", INVOICE)
                for g in grants
                for _ in range(8)
            ]
        )
        for r in replies:
            if r.error is None:
                successes += 1
            else:
                refused[r.error] = refused.get(r.error, 0) + 1
    after = await raw.target_stats()
    workers_after = await _execute_stats(operator)
    assert successes == 1000
    assert refused == {"invalid_transaction": 7000}
    assert after["side_effects"] - before["side_effects"] == 1000
    assert after["calls"]["create_invoice"] - before["calls"].get("create_invoice", 0) == 1000
    served = [workers_after[w] - workers_before.get(w, 0) for w in workers_after]
    assert sum(1 for n in served if n > 0) >= 2, served


async def _assert_burnt(raw: Raw, session: str, g: dict[str, Any], tool: str, params: Any) -> None:
    legit = await raw.execute(session, g, tool, params)
    assert legit.error == "invalid_transaction", "a refused attempt must burn the token"


async def test_param_substitution_burns_the_token(raw: Raw) -> None:
    alice = raw.session("alice", "billing")
    g = await _grant(raw, alice, "payments.create_invoice", INVOICE)
    evil = {**INVOICE, "amount": 9999}
    r = await raw.execute(alice, g, "payments.create_invoice", evil, signed_params=evil)
    assert r.error == "invalid_transaction"
    await _assert_burnt(raw, alice, g, "payments.create_invoice", INVOICE)


async def test_schema_invalid_params_at_execute_burn_the_token(raw: Raw) -> None:
    alice = raw.session("alice", "billing")
    g = await _grant(raw, alice, "payments.create_invoice", INVOICE)
    bad = {**INVOICE, "extra": "field"}
    r = await raw.execute(alice, g, "payments.create_invoice", bad)
    assert r.error == "invalid_transaction"
    await _assert_burnt(raw, alice, g, "payments.create_invoice", INVOICE)


async def test_tool_substitution_burns_the_token(raw: Raw) -> None:
    alice = raw.session("alice", "billing")
    for tool, params in (("payments.create_invoice", INVOICE), ("payments.no_such_tool", {})):
        g = await _grant(raw, alice, "payments.list_invoices", {})  # a fresh token each time
        r = await raw.execute(alice, g, tool, params, signed_params=params)
        assert r.error == "invalid_transaction", (tool, r.body)
        await _assert_burnt(raw, alice, g, "payments.list_invoices", {})


async def test_transaction_id_substitution_burns_the_token(raw: Raw) -> None:
    alice = raw.session("alice", "billing")
    g = await _grant(raw, alice, "payments.list_invoices", {})
    other = await _grant(raw, alice, "payments.list_invoices", {})
    forged = {**g, "transaction_id": other["transaction_id"]}
    assert (await raw.execute(alice, forged, "payments.list_invoices", {})).error == (
        "invalid_transaction"
    )
    await _assert_burnt(raw, alice, g, "payments.list_invoices", {})
    ok = await raw.execute(alice, other, "payments.list_invoices", {})
    assert ok.error is None


async def test_another_users_token_is_refused_and_burnt(raw: Raw) -> None:
    alice = raw.session("alice", "billing")
    bob = raw.session("bob", "billing")
    g = await _grant(raw, alice, "payments.create_invoice", INVOICE)
    assert (await raw.execute(bob, g, "payments.create_invoice", INVOICE)).error == (
        "invalid_transaction"
    )
    await _assert_burnt(raw, alice, g, "payments.create_invoice", INVOICE)


async def test_expired_token_is_refused(raw: Raw) -> None:
    alice = raw.session("alice")
    g = await _grant(raw, alice, "test.echo", {"text": "hi"})  # policy TTL: 1 s
    await asyncio.sleep(1.3)
    assert (await raw.execute(alice, g, "test.echo", {"text": "hi"})).error == (
        "invalid_transaction"
    )


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unsigned(header: dict[str, Any], claims: dict[str, Any]) -> str:
    return _b64(json.dumps(header).encode()) + "." + _b64(json.dumps(claims).encode())


def _jwt_attacks(raw: Raw) -> dict[str, str]:
    home = raw.stack.home
    key = load_private_key(home / IDP_KEY)
    kid = public_jwk(key)["kid"]
    now = int(time.time())
    good = {
        "iss": "https://idp.handshake.local",
        "aud": "mcp-handshake",
        "sub": "alice",
        "iat": now,
        "exp": now + 600,
        "roles": ["billing", "treasury"],
    }

    def signed(claims: dict[str, Any], **header: Any) -> str:
        return jwt.encode(claims, key, algorithm="EdDSA", headers={"kid": kid, **header})

    public = json.loads((home / "keys" / "idp.jwks.json").read_text())["keys"][0]
    hs_input = _unsigned({"alg": "HS256", "typ": "JWT", "kid": kid}, good)
    hs_sig = _b64(hmac.new(json.dumps(public).encode(), hs_input.encode(), hashlib.sha256).digest())
    hs_x = _b64(hmac.new(public["x"].encode(), hs_input.encode(), hashlib.sha256).digest())
    attacks = {
        "alg none": _unsigned({"alg": "none", "typ": "JWT"}, good) + ".",
        "alg none with kid": _unsigned({"alg": "none", "kid": kid}, good) + ".",
        "HS256 keyed with the public JWK": f"{hs_input}.{hs_sig}",
        "HS256 keyed with the public x": f"{hs_input}.{hs_x}",
        "wrong aud": signed({**good, "aud": "someone-else"}),
        "wrong iss": signed({**good, "iss": "https://evil.example"}),
        "expired": signed({**good, "iat": now - 7200, "exp": now - 3600}),
        "nbf in the future": signed({**good, "nbf": now + 3600}),
        "unknown kid": jwt.encode(good, key, algorithm="EdDSA", headers={"kid": "nope"}),
        "other key": jwt.encode(
            good, generate_private_key(), algorithm="EdDSA", headers={"kid": kid}
        ),
        "oversized": signed({**good, "pad": "x" * 9000}),
        "garbage": "not-a-jwt",
        "empty": "",
        "truncated signature": signed(good)[:-10],
    }
    for claim in ("exp", "iat", "sub", "iss", "aud"):
        attacks[f"missing {claim}"] = signed({k: v for k, v in good.items() if k != claim})
    return attacks


def _redis_addresses(stack: Stack, kinds: set[str], ports: set[int]) -> set[str]:
    """``ip:port`` of every TCP connection to Redis held by the stack's workers of these
    kinds, as Redis's MONITOR names its clients. Workers do not name their Redis
    connections, so each is found from its process: socket inodes in ``/proc/<pid>/fd``,
    matched in ``/proc/<pid>/net/tcp``."""
    addresses = set()
    for proc in stack.procs:
        if proc.name.rsplit("-", 1)[0] not in kinds or proc.popen.poll() is not None:
            continue
        fds = Path(f"/proc/{proc.popen.pid}/fd")
        sockets = set()
        for fd in fds.iterdir():
            with contextlib.suppress(OSError):
                link = os.readlink(fd)
                if link.startswith("socket:["):
                    sockets.add(link[len("socket:[") : -1])
        table = Path(f"/proc/{proc.popen.pid}/net/tcp").read_text().splitlines()[1:]
        for row in (line.split() for line in table):
            local, remote, inode = row[1], row[2], row[9]
            if inode in sockets and int(remote.split(":")[1], 16) in ports:
                ip, port = local.split(":")
                host = socket.inet_ntoa(struct.pack("=I", int(ip, 16)))
                addresses.add(f"{host}:{int(port, 16)}")
    return addresses


async def _redis_nodes(redis: Any) -> list[Redis]:
    """One plain client per server holding the store's data: the single server, the
    Sentinel master, or every master of a Redis Cluster."""
    if not isinstance(redis, RedisCluster):
        return [redis]
    await redis.initialize()
    password = redis.get_connection_kwargs().get("password")
    return [Redis(host=n.host, port=n.port, password=password) for n in redis.get_primaries()]


async def _redis_ports(redis: Any) -> set[int]:
    if isinstance(redis, RedisCluster):
        await redis.initialize()
        return {int(n.port) for n in redis.get_nodes()}
    pool = redis.connection_pool
    if hasattr(pool, "get_master_address"):  # through Sentinel
        return {int((await pool.get_master_address())[1])}
    return {int(pool.connection_kwargs["port"])}


@contextlib.asynccontextmanager
async def _redis_commands(redis: Any) -> AsyncIterator[list[MonitorCommandInfo]]:
    """Every command the store's servers run while the block runs (MONITOR on each),
    complete on exit."""
    seen: list[MonitorCommandInfo] = []
    marker = f"end-of-watch-{uuid.uuid4().hex}"

    async def watch(monitor: Monitor) -> None:
        while (cmd := await monitor.next_command())["command"] != f"ECHO {marker}":
            seen.append(cmd)

    async with contextlib.AsyncExitStack() as stack:
        nodes = await _redis_nodes(redis)
        watchers = []
        for node in nodes:
            monitor = await stack.enter_async_context(node.monitor())
            watchers.append(asyncio.create_task(watch(monitor)))
        try:
            yield seen
            for node in nodes:  # MONITOR reports in order: all before it are in
                await node.echo(marker)
            await asyncio.wait_for(asyncio.shield(asyncio.gather(*watchers)), 10)
        finally:
            for watcher in watchers:
                watcher.cancel()
            await asyncio.gather(*watchers, return_exceptions=True)
            for node in nodes:
                if node is not redis:
                    await node.aclose()


async def test_jwt_attacks_are_unauthenticated_and_never_touch_redis(
    raw: Raw, redis: Redis
) -> None:
    alice = raw.session("alice", "billing")
    g = await _grant(raw, alice, "payments.create_invoice", INVOICE)
    # Only what the workers under attack send counts: approval workers sweep Redis
    # in the background, and other tests' processes may share this Redis.
    async with _redis_commands(redis) as commands:
        for name, token in _jwt_attacks(raw).items():
            for subject, body, headers in (
                (raw.s.authorize, {"tool": "payments.create_invoice", "params": INVOICE}, {}),
                (
                    raw.s.execute,
                    {
                        "transaction_id": g["transaction_id"],
                        "tool": "payments.create_invoice",
                        "params": INVOICE,
                    },
                    {"Handshake-Transaction-Token": g["token"]},
                ),
                (raw.s.tools, {}, {}),
            ):
                r = await raw.request(
                    subject, body, headers={**headers, "Authorization": f"Bearer {token}"}
                )
                assert r.error == "unauthenticated", (name, subject, r.body)
    async with _redis_commands(redis) as control:  # a valid request does reach Redis
        await _grant(raw, alice, "payments.get_exchange_rate", RATE)
    workers = _redis_addresses(raw.stack, {"authorize", "execute"}, await _redis_ports(redis))

    def by_workers(seen: list[MonitorCommandInfo]) -> list[str]:
        return [
            c["command"] for c in seen if f"{c['client_address']}:{c['client_port']}" in workers
        ]

    assert by_workers(control), "the filter must see what the workers send"
    assert by_workers(commands) == [], "a refused session must not reach Redis"
    # the attacked token is still intact for its owner
    assert (await raw.execute(alice, g, "payments.create_invoice", INVOICE)).error is None


async def test_agents_cannot_publish_to_executors(raw: Raw) -> None:
    """The bus refuses an agent's publish to an internal subject: no executor sees it."""
    subject = "handshake.internal.executor.payments"
    with pytest.raises(nats.errors.TimeoutError):
        await raw.nc.request(subject, b"{}", timeout=1)


async def test_direct_publish_to_executor_executes_nothing(raw: Raw) -> None:
    """Even a process holding the execute workers' NATS identity cannot run an operation
    without a dispatch signed by the execute workers' key."""
    async with connected(raw.stack, "execute") as execute:
        await _forged_dispatches_refused(raw, execute)


async def _forged_dispatches_refused(raw: Raw, execute: Raw) -> None:
    before = await raw.target_stats()
    subject = "handshake.internal.executor.payments"
    now = time.time()
    dispatch = {
        "txn": "11111111-1111-1111-1111-111111111111",
        "sub": "mallory",
        "tool": "payments.send_payment",
        "target": "payments",
        "params": {"to_account": "acct_mallory1", "amount": 1e6, "currency": "USD"},
        "ph": "sha256:" + "0" * 64,
        "iat": now,
        "exp": now + 30,
    }
    body = json.dumps(dispatch).encode()
    rogue = generate_private_key()
    forged = jwt.api_jws.encode(
        body,
        rogue,
        "EdDSA",
        {"typ": "handshake-dispatch+jws", "kid": public_jwk(rogue)["kid"]},
        is_payload_detached=True,
    )
    for headers in (
        None,
        {"Handshake-Dispatch-Signature": "garbage"},
        {"Handshake-Dispatch-Signature": forged},
    ):
        msg = await execute.nc.request(subject, body, timeout=5, headers=headers)
        assert msg.headers and msg.headers.get("Nats-Service-Error") == "forbidden"
    after = await raw.target_stats()
    assert after == before


async def _executor_requests(operator: Raw) -> dict[str, int]:
    """Dispatches served so far by each executor process."""
    per_worker = {}
    for s in await discover(operator.nc, "STATS.handshake-executor", 0.5):
        ep = next(e for e in s["endpoints"] if e["name"] == "executor-payments")
        per_worker[s["id"]] = ep["num_requests"]
    return per_worker


@pytest.fixture
def two_executors(stack_factory: Callable[..., Stack]) -> Stack:
    return stack_factory(StackSpec(executor=2))


async def test_replayed_signed_dispatch_executes_nothing_new(two_executors: Stack) -> None:
    """A process holding worker identities (one that reads the internal subject, one that
    may publish to it) replays a genuine dispatch to every executor. The tool is a GET of
    a customer record: the target does not de-duplicate it, and every call it receives is
    counted."""
    params = {"customer_id": "cus_8f3k2m9q"}
    async with (
        connected(two_executors) as raw,
        connected(two_executors, "executor") as spy,
        connected(two_executors, "execute") as pub,
        connected(two_executors, "operator") as operator,
    ):
        captured: list[Any] = []
        sub = await spy.nc.subscribe(raw.s.executor("payments"), cb=_append(captured))
        await spy.nc.flush()
        carol = raw.session("carol", "support")
        g = await _grant(raw, carol, "customers.get_customer", params)
        done = await raw.execute(carol, g, "customers.get_customer", params)
        assert done.error is None, done.body
        await sub.unsubscribe()
        assert len(captured) == 1
        msg = captured[0]
        before = await raw.target_stats()
        served = await _executor_requests(operator)
        assert len(served) == 2
        replays = 0
        # Replay until both executors have refused some (queue groups pick at random).
        while replays < 8 or min((await _executor_requests(operator)).values()) < 2:
            assert replays < 64, "the replays never reached both executors"
            reply = await pub.nc.request(msg.subject, msg.data, timeout=5, headers=msg.headers)
            assert reply.headers and reply.headers.get("Nats-Service-Error") == "forbidden"
            assert b"Jane" not in reply.data and b"4242" not in reply.data
            replays += 1
        tampered = msg.data.replace(b"cus_8f3k2m9q", b"cus_a1b2c3d4")
        reply = await pub.nc.request(msg.subject, tampered, timeout=5, headers=msg.headers)
        assert reply.headers and reply.headers.get("Nats-Service-Error") == "forbidden"
        after = await raw.target_stats()
        assert after["calls"] == before["calls"], "a replay reached the target"
        assert after["side_effects"] == before["side_effects"]


def _append(sink: list[Any]) -> Any:
    async def cb(msg: Any) -> None:
        sink.append(msg)

    return cb


async def test_redis_holds_no_raw_token(raw: Raw, redis: Redis) -> None:
    alice = raw.session("alice", "billing")
    tokens = []
    for i in range(20):
        g = await _grant(raw, alice, "payments.create_invoice", INVOICE)
        tokens.append(g["token"])
        if i % 2:  # half used, half still live
            assert (await raw.execute(alice, g, "payments.create_invoice", INVOICE)).error is None
    dump = bytearray()
    async for key in redis.scan_iter(count=1000):
        dump += key
        kind = (await redis.type(key)).decode()
        if kind == "hash":
            for k, v in (await redis.hgetall(key)).items():
                dump += k + v
        elif kind == "string":
            dump += await redis.get(key) or b""
    assert dump, "expected transaction state in Redis"
    for token in tokens:
        assert token.encode() not in dump
        assert base64.urlsafe_b64decode(token + "=") not in dump
