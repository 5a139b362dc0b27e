"""The token store on Redis in every production shape, against real servers: Cluster,
Sentinel, an ACL user, TLS with a client certificate; failovers under traffic; refused
credentials and an untrusted certificate ending a worker with one line."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from redis.exceptions import NoPermissionError

from mcp_handshake.services.dev.devstack import Stack, StackSpec
from mcp_handshake.services.store import Store
from mcp_handshake.services.store.redis import redis_client
from mcp_handshake.services.store.redis_check import check_redis
from mcp_handshake.shared.errors import HandshakeError
from mcp_handshake.shared.hashing import token_hash
from mcp_handshake.shared.settings import Settings
from mcp_handshake.shared.subjects import Keys
from tests.conftest import Raw, connected, make_stack
from tests.support.redis_certs import make_tls
from tests.support.redis_topologies import ClusterTopology, SingleRedis

LIST = {"status": None, "limit": 20}  # normalized params of payments.list_invoices
SPEC = StackSpec(authorize=1, execute=1, executor=1, approval=1, audit=1)


def _stack(home: Path, env: dict[str, str]) -> Stack:
    st = make_stack(home, SPEC, redis_url=env["HANDSHAKE_REDIS_URL"])
    st.extra_env.update(env)
    asyncio.run(st.start(timeout=120))
    return st


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ClusterTopology, Stack]]:
    topo = ClusterTopology(tmp_path_factory.mktemp("cluster")).start()
    try:
        st = _stack(tmp_path_factory.mktemp("cluster-home"), topo.env())
        try:
            yield topo, st
        finally:
            st.stop()
    finally:
        topo.stop()


async def _public(raw: Raw, session: str) -> tuple[str | None, dict[str, Any] | None]:
    """One public call (authorize + execute); (error code or None, the grant)."""
    params = {"seconds": 0}
    g = await raw.authorize(session, "test.sleep", params)
    if g.error is not None:
        return g.error, None
    r = await raw.execute(session, g.body, "test.sleep", params)
    return r.error, g.body


async def _internal_and_replay(raw: Raw, redis: Any) -> None:
    """An internal call with a proof; the same proof again (and concurrently) refused,
    its jti marker in the record's hash slot."""
    alice = raw.session("alice", "billing")
    key = raw.key("alice")
    g = (await raw.authorize(alice, "payments.list_invoices", LIST)).body
    proof = key.proof(g["transaction_id"], "payments.list_invoices", g["params_hash"])
    headers = {"Handshake-Proof": proof}
    ok = await raw.execute(alice, g, "payments.list_invoices", LIST, extra_headers=headers)
    assert ok.error is None, ok.body
    again = await raw.execute(alice, g, "payments.list_invoices", LIST, extra_headers=headers)
    assert again.error == "validation_failed", again.body
    # A fresh token, one proof sent five times at once: exactly one runs.
    g = (await raw.authorize(alice, "payments.list_invoices", LIST)).body
    proof = key.proof(g["transaction_id"], "payments.list_invoices", g["params_hash"],
                      jti="replayed-jti-" + g["transaction_id"][:12])  # fmt: skip
    replies = await asyncio.gather(*(raw.execute(
        alice, g, "payments.list_invoices", LIST, extra_headers={"Handshake-Proof": proof})
        for _ in range(5)))  # fmt: skip
    assert sorted(str(r.error) for r in replies) == ["None"] + ["validation_failed"] * 4
    th = token_hash(g["token"])
    marker = Keys.tx_jti(th, key.thumbprint, "replayed-jti-" + g["transaction_id"][:12])
    assert await redis.exists(marker) == 1
    if hasattr(redis, "keyslot"):
        assert redis.keyslot(marker) == redis.keyslot(Keys.tx(th))


def _store(env: dict[str, str]) -> Any:
    return redis_client(Settings.from_env(env))


async def _handshake(st: Stack, env: dict[str, str]) -> None:
    redis = _store(env)
    try:
        async with connected(st) as raw:
            err, _ = await _public(raw, raw.session("bob", "support"))
            assert err is None
            await _internal_and_replay(raw, redis)
    finally:
        await redis.aclose()


def _worker_exit(st: Stack, env: dict[str, str], timeout: float = 30.0) -> tuple[int, str, float]:
    """Start an authorize worker of ``st`` with ``env`` on top; its exit code, stderr and
    how long it ran."""
    full = {**st.env("authorize"), **env}
    started = time.monotonic()
    out = subprocess.run(
        [sys.executable, "-m", "mcp_handshake.services.dev.cli", "worker", "authorize"],
        env=full, capture_output=True, text=True, timeout=timeout, check=False,
    )  # fmt: skip
    return out.returncode, out.stderr, time.monotonic() - started


#: The only commands the store needs (scripts included), on its own keys.
ACL = ("user handshake on >{pw} ~handshake:* resetchannels -@all +ping "
       "+evalsha +eval +get +set +del +exists +incr +incrby +hget +hmget +hset +hsetnx +hdel "
       "+hexists +hgetall +pexpire +pttl +zadd +zrem +zrangebyscore +zcard\n")  # fmt: skip


def test_acl_user_and_wrong_password(tmp_path: Path) -> None:
    pw = "acl-" + "x" * 20
    single = SingleRedis(tmp_path / "redis", acl=ACL.format(pw=pw)).start()
    secret = tmp_path / "acl_password"
    secret.write_text(pw)
    env = {"HANDSHAKE_REDIS_URL": f"redis://127.0.0.1:{single.node.port}/0",  # type: ignore[union-attr]
           "HANDSHAKE_REDIS_USERNAME": "handshake",
           "HANDSHAKE_REDIS_PASSWORD_FILE": str(secret)}  # fmt: skip
    try:
        st = _stack(tmp_path / "home", env)
        try:
            asyncio.run(_acl_checks(st, env))
            secret.write_text("not-the-password")
            code, err, took = _worker_exit(st, env)
        finally:
            st.stop()
    finally:
        single.stop()
    assert code == 3, err
    assert err.strip().count("\n") == 0 and "Traceback" not in err, err
    assert err.startswith("unauthenticated: Redis at") and "user handshake" in err, err
    assert "not-the-password" not in err and pw not in err
    assert took < 20


async def _acl_checks(st: Stack, env: dict[str, str]) -> None:
    redis = _store(env)
    try:
        with pytest.raises(NoPermissionError):
            await redis.flushall()
        async with connected(st) as raw:
            err, _ = await _public(raw, raw.session("bob", "support"))
            assert err is None
            await _internal_and_replay(raw, redis)
    finally:
        await redis.aclose()


def test_tls_client_certificate_and_wrong_ca(tmp_path: Path) -> None:
    tls = make_tls(tmp_path / "tls")
    other = make_tls(tmp_path / "other")
    single = SingleRedis(tmp_path / "redis", tls=tls).start()
    env = {"HANDSHAKE_REDIS_URL": single.url(), "HANDSHAKE_REDIS_TLS_CA": str(tls.ca),
           "HANDSHAKE_REDIS_TLS_CERT": str(tls.client_cert),
           "HANDSHAKE_REDIS_TLS_KEY": str(tls.client_key)}  # fmt: skip
    try:
        st = _stack(tmp_path / "home", env)
        try:
            asyncio.run(_handshake(st, env))
            code, err, took = _worker_exit(st, {**env, "HANDSHAKE_REDIS_TLS_CA": str(other.ca)})
        finally:
            st.stop()
    finally:
        single.stop()
    assert code == 8, err
    assert err.strip().count("\n") == 0 and "Traceback" not in err, err
    assert err.startswith("unavailable: TLS handshake with Redis at rediss://***@"), err
    assert "HANDSHAKE_REDIS_TLS_CA" in err and single.password not in err
    assert took < 20


def test_settings_and_secrets(tmp_path: Path) -> None:
    """Each shape from the environment; passwords in no repr; bad input refused clearly."""
    pw = tmp_path / "pw"
    pw.write_text("s3cret-value\n")
    s = Settings.from_env({"HANDSHAKE_REDIS_URL": "redis://:url-secret@h:1/0",
                           "HANDSHAKE_REDIS_SENTINEL_MASTER": "m",
                           "HANDSHAKE_REDIS_SENTINELS": "a:1, b:2",
                           "HANDSHAKE_REDIS_PASSWORD_FILE": str(pw),
                           "HOME": str(tmp_path)})  # fmt: skip
    assert (s.redis_mode, s.redis_sentinels, s.redis_password()) == ("sentinel", ("a:1", "b:2"),
                                                                      "s3cret-value")  # fmt: skip
    client = redis_client(s)
    for shown in (repr(s), repr(client), repr(Store.over(client))):
        assert "s3cret" not in shown and "url-secret" not in shown
    with pytest.raises(ValueError, match="HANDSHAKE_REDIS_MODE"):
        Settings.from_env({"HANDSHAKE_REDIS_MODE": "ring", "HOME": str(tmp_path)})
    with pytest.raises(ValueError, match="SENTINELS"):
        Settings.from_env({"HANDSHAKE_REDIS_MODE": "sentinel", "HOME": str(tmp_path)})
    tls_on_plain = Settings(redis_url="redis://h:1/0", redis_tls_ca=pw)
    with pytest.raises(ValueError, match="rediss://"):
        redis_client(tls_on_plain)


def test_handshake_on_cluster(cluster: tuple[ClusterTopology, Stack]) -> None:
    topo, st = cluster
    asyncio.run(_handshake(st, topo.env()))
    # Every node forgets the scripts (as a restarted or promoted node has): each one
    # gets them again on its first NOSCRIPT, and the handshake still works.
    for node in topo.nodes:
        node.cli("SCRIPT", "FLUSH")
    asyncio.run(_handshake(st, topo.env()))


async def _traffic_through(st: Stack, failover: Any, budget_s: float = 20.0) -> dict[str, Any]:
    """Calls in a loop while ``failover`` runs in a thread; then until calls succeed
    again. Returns outcomes, the grants executed, and how long service took to return."""
    outcomes: dict[str, int] = {}
    executed: list[dict[str, Any]] = []
    async with connected(st) as raw:
        session = raw.session("carol", "support")
        task = asyncio.create_task(asyncio.to_thread(failover))
        while not task.done():
            err, grant = await _public(raw, session)
            outcomes[str(err)] = outcomes.get(str(err), 0) + 1
            if err is None and grant is not None:
                executed.append(grant)
        await task
        started = time.monotonic()
        while True:
            err, grant = await _public(raw, session)
            if err is None:
                break
            assert err == "unavailable" and time.monotonic() - started < budget_s, err
            await asyncio.sleep(0.2)
        back = time.monotonic() - started
        # No token is consumed twice: every one that ran is refused now.
        for g in executed:
            r = await raw.execute(session, g, "test.sleep", {"seconds": 0})
            assert r.error == "invalid_transaction", r.body
    return {"outcomes": outcomes, "executed": len(executed), "back_s": back}


def test_cluster_failover_under_traffic(cluster: tuple[ClusterTopology, Stack]) -> None:
    topo, st = cluster
    master = topo.master_of_slot(_slot(topo, Keys.LIVE))
    report = asyncio.run(_traffic_through(st, lambda: topo.failover(master)))
    print("cluster failover:", report)
    assert set(report["outcomes"]) <= {"None", "unavailable"}, report
    assert report["executed"] > 0


def test_cluster_master_killed_under_traffic(cluster: tuple[ClusterTopology, Stack]) -> None:
    topo, st = cluster
    master = topo.master_of_slot(_slot(topo, Keys.LIVE))

    def kill() -> None:
        time.sleep(0.5)
        master.kill()
        topo.wait_ok(30)

    report = asyncio.run(_traffic_through(st, kill))
    print("cluster master killed:", report)
    assert set(report["outcomes"]) <= {"None", "unavailable"}, report
    master.start()  # back as a replica of the promoted node
    topo.wait_ok(30)


def _slot(topo: ClusterTopology, key: str) -> int:
    return int(topo.nodes[0].cli("CLUSTER", "KEYSLOT", key))


async def _refused_line(env: dict[str, str]) -> str:
    settings = Settings.from_env(env)
    client = redis_client(settings)
    started = time.monotonic()
    try:
        with pytest.raises(HandshakeError) as refused:
            await check_redis(client, settings)
    finally:
        await client.aclose()
    assert time.monotonic() - started < 10
    return f"{refused.value.code}: {refused.value.message}"


def test_wrong_password_on_cluster(cluster: tuple[ClusterTopology, Stack], tmp_path: Path) -> None:
    """Refused credentials are one clear error (the worker's exit line)."""
    wrong = tmp_path / "wrong"
    wrong.write_text("not-the-password")
    line = asyncio.run(_refused_line({**cluster[0].env(),
                                      "HANDSHAKE_REDIS_PASSWORD_FILE": str(wrong)}))  # fmt: skip
    assert line.startswith("unauthenticated: Redis at redis://***@"), line
    assert "not-the-password" not in line and cluster[0].password not in line
