"""The token store through Redis Sentinel, against real servers: a master, a replica and
three Sentinels (with their own password); the handshake, a failover under traffic, and
refused credentials (the master's or the sentinels') as one clear error."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from mcp_handshake.services.dev.devstack import Stack
from tests.support.redis_topologies import SentinelTopology
from tests.test_redis_modes import _handshake, _refused_line, _stack, _traffic_through


@pytest.fixture(scope="module")
def sentinel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[SentinelTopology, Stack]]:
    topo = SentinelTopology(tmp_path_factory.mktemp("sentinel")).start()
    try:
        st = _stack(tmp_path_factory.mktemp("sentinel-home"), topo.env())
        try:
            yield topo, st
        finally:
            st.stop()
    finally:
        topo.stop()


def test_handshake_on_sentinel(sentinel: tuple[SentinelTopology, Stack]) -> None:
    topo, st = sentinel
    asyncio.run(_handshake(st, topo.env()))


def test_sentinel_failover_under_traffic(sentinel: tuple[SentinelTopology, Stack]) -> None:
    topo, st = sentinel
    old = topo.master()
    report = asyncio.run(_traffic_through(st, topo.failover))
    print("sentinel failover:", report)
    assert topo.master() is not old
    assert set(report["outcomes"]) <= {"None", "unavailable"}, report
    assert report["executed"] > 0


def test_wrong_passwords_on_sentinel(
    sentinel: tuple[SentinelTopology, Stack], tmp_path: Path
) -> None:
    """A refused master password and a refused sentinel password: one clear error each."""
    wrong = tmp_path / "wrong"
    wrong.write_text("not-the-password")
    line = asyncio.run(_refused_line({**sentinel[0].env(),
                                      "HANDSHAKE_REDIS_PASSWORD_FILE": str(wrong)}))  # fmt: skip
    assert line.startswith("unauthenticated: Redis at sentinel master handshake"), line
    env = {**sentinel[0].env(), "HANDSHAKE_REDIS_SENTINEL_PASSWORD_FILE": str(wrong)}
    line = asyncio.run(_refused_line(env))
    assert line.startswith("unauthenticated: Redis sentinels at"), line
    assert "not-the-password" not in line and sentinel[0].password not in line
