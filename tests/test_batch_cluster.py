"""On Redis Cluster a batch's rounds stay on redis-py, as the single path's do (no lean
connection there): a batch authorizes and executes, each operation with its own
outcome, and a token sent twice in one batch runs once."""

from __future__ import annotations

import asyncio

from mcp_handshake.services.dev.devstack import Stack
from tests.conftest import connected
from tests.support.redis_topologies import ClusterTopology
from tests.test_batch import authorize_many, code, execute_many, op
from tests.test_redis_modes import cluster

__all__ = ["cluster"]  # the fixture, used here

SLEEP = {"seconds": 0}


def test_a_batch_on_cluster_keeps_each_outcome(cluster: tuple[ClusterTopology, Stack]) -> None:
    _, st = cluster

    async def go() -> None:
        async with connected(st) as raw:
            bob = raw.session("bob", "support")
            grants = await authorize_many(raw, bob, [("test.sleep", SLEEP)] * 3)
            assert [code(g) for g in grants] == [None] * 3, grants
            ops = [op(g, "test.sleep", SLEEP) for g in grants]
            results = await execute_many(raw, bob, [*ops, ops[0]])
            codes = [code(r) for r in results]
            assert codes[1:3] == [None, None], results
            assert sorted(map(str, (codes[0], codes[3]))) == ["None", "invalid_transaction"]
            again = await execute_many(raw, bob, ops)
            assert [code(r) for r in again] == ["invalid_transaction"] * 3

    asyncio.run(go())
