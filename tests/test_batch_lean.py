"""A batch's Redis rounds on a single Redis go over the lean connection (``store/resp.py``)
and keep every property the redis-py rounds had: each consume is its own script, so a
token raced across two concurrent batches is used up once; Redis gone in the middle of
a round is ``unavailable`` for every operation of it, and fast; a script Redis forgot is
sent again (EVAL); the executor's run markers are each claimed once. And each distinct
params of a tool is normalized and hashed once per batch, each operation keeping its own.

redis-py is pointed at a port nothing listens on: a step that still went through it
would fail these tests."""

from __future__ import annotations

import asyncio
import socket
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest
from pydantic import BaseModel, ConfigDict
from redis.asyncio import Redis

from mcp_handshake.services.core.bind import Bound, batch_bindings, bind
from mcp_handshake.services.core.policy import Rules
from mcp_handshake.services.core.tools import Tier, Tool
from mcp_handshake.services.store import DispatchLog, TokenStore, TxRecord
from mcp_handshake.services.store.coalesce import Coalescer, Member
from mcp_handshake.services.store.redis import lean_connection
from mcp_handshake.services.store.resp import Arg, Resp
from mcp_handshake.services.store.scripts import Scripts
from mcp_handshake.shared.errors import HandshakeError, InvalidParams, Unavailable
from mcp_handshake.shared.settings import Settings
from mcp_handshake.shared.subjects import Keys
from tests.support.redis_topologies import SingleRedis


class CountingResp(Resp):
    """The lean connection, counting its rounds (one ``execute_many`` each)."""

    rounds: list[int]

    async def execute_many(self, commands: Sequence[Sequence[Arg]]) -> list[Any]:
        self.rounds.append(len(commands))
        return await super().execute_many(commands)


@pytest.fixture
async def lean(single: SingleRedis) -> AsyncIterator[CountingResp]:
    conn = lean_connection(Settings(redis_url=single.url()))
    assert conn is not None
    conn.__class__ = CountingResp
    conn.rounds = []
    try:
        yield conn  # type: ignore[misc]
    finally:
        await conn.aclose()


def _nowhere() -> Redis:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return Redis(host="127.0.0.1", port=port, socket_connect_timeout=0.2)


async def _issue(tokens: TokenStore) -> tuple[str, str]:
    token_hash, txn = uuid.uuid4().hex, "txn_" + uuid.uuid4().hex
    now = time.time()
    record = TxRecord(txn=txn, sub="alice", tool="t.x", ph="sha256:x", tier="public",
                      status="granted", auth_at=now, expires_at=now + 60)  # fmt: skip
    await tokens.issue(token_hash, record, 60)
    return token_hash, txn


async def _consume(member: Member, token_hash: str, txn: str) -> str:
    try:
        await TokenStore(member).consume(token_hash, sub="alice", tool="t.x", txn=txn,
                                         ph="sha256:x", allowed=True, proof_required=False,
                                         approval_required=False)  # fmt: skip
        return "ok"
    except HandshakeError as exc:
        return exc.code
    finally:
        member.leave()


async def test_a_token_raced_across_two_concurrent_batches_runs_once(lean: CountingResp) -> None:
    scripts = Scripts(_nowhere(), lean)
    tokens = TokenStore(scripts)
    raced = await _issue(tokens)  # Redis lacked the scripts: NOSCRIPT, then EVAL, lean
    others = [await _issue(tokens) for _ in range(4)]
    warm = Coalescer(scripts, 1)
    assert await _consume(warm.member(), *await _issue(tokens)) == "ok"  # NOSCRIPT: EVAL
    lean.rounds.clear()
    first, second = Coalescer(scripts, 4), Coalescer(scripts, 4)
    in_first = [raced, raced, others[0], others[1]]
    in_second = [raced, others[2], others[3], raced]
    runs = [_consume(first.member(), *t) for t in in_first]
    runs += [_consume(second.member(), *t) for t in in_second]
    outcomes = await asyncio.gather(*runs)
    raced_outcomes = [outcomes[i] for i in (0, 1, 4, 7)]
    assert sorted(raced_outcomes) == ["invalid_transaction"] * 3 + ["ok"], outcomes
    assert [outcomes[i] for i in (2, 3, 5, 6)] == ["ok"] * 4
    assert sorted(lean.rounds) == [4, 4]  # one round trip per batch, both lean


async def test_redis_stopped_mid_round_is_unavailable_for_every_operation(
    single: SingleRedis, lean: CountingResp
) -> None:
    scripts = Scripts(_nowhere(), lean)
    tokens = TokenStore(scripts)
    issued = [await _issue(tokens) for _ in range(3)]
    coalescer = Coalescer(scripts, 3)
    early = [asyncio.ensure_future(_consume(coalescer.member(), *t)) for t in issued[:2]]
    await asyncio.sleep(0.05)  # two operations have joined the round; it waits for the third
    assert not any(f.done() for f in early)
    single.stop()
    t0 = time.monotonic()
    late = await _consume(coalescer.member(), *issued[2])
    assert [await f for f in early] + [late] == ["unavailable"] * 3
    assert time.monotonic() - t0 < 2.0


async def test_a_consume_that_fails_closed_raises_unavailable(single: SingleRedis) -> None:
    conn = lean_connection(Settings(redis_url=single.url()))
    assert conn is not None
    try:
        scripts = Scripts(_nowhere(), conn)
        token_hash, txn = await _issue(TokenStore(scripts))
        single.stop()
        with pytest.raises(Unavailable):
            await TokenStore(scripts).consume(token_hash, sub="alice", tool="t.x", txn=txn,
                                              ph="sha256:x", allowed=True,
                                              proof_required=False,
                                              approval_required=False)  # fmt: skip
    finally:
        await conn.aclose()


async def test_claim_many_over_the_lean_connection(single: SingleRedis, lean: CountingResp) -> None:
    log = DispatchLog(_nowhere(), lean)
    a, b, held = ("t-" + uuid.uuid4().hex for _ in range(3))
    assert await log.claim(held, 30)
    lean.rounds.clear()
    won = await log.claim_many([(a, 30, 0), (a, 30, 0), (b, 30, 0), (held, 30, 0), (a, 30, 1)])
    assert won == [True, False, True, False, True]  # a reconcile run has a marker of its own
    assert lean.rounds == [5, 2]  # the SETs, then the markers found held read back
    assert not await log.claim(a, 30) and not await log.claim(b, 30)
    assert 0 < await lean.execute("PTTL", Keys.dispatched(b)) <= 30_000
    single.stop()
    with pytest.raises(Unavailable):
        await log.claim_many([("t-" + uuid.uuid4().hex, 30, 0)])


class _Rate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    base: str
    quote: str = "USD"
    amount: float = 1.0


def _decide(params: dict[str, Any]) -> Rules:
    return Rules("fx.rate", "permit", 60, 60, frozenset())


async def test_a_batch_normalizes_and_hashes_each_distinct_params_once() -> None:
    tool = Tool("fx.rate", "rate", _Rate, Tier.PUBLIC, "fx", lambda p, c: p)
    twin = Tool("fx.rate", "rate", _Rate, Tier.PUBLIC, "fx", lambda p, c: p)
    alone = bind(tool, {"base": "EUR"}, _decide)
    with batch_bindings() as shared:

        async def one(raw: dict[str, Any], of: Tool = tool) -> Bound:
            await asyncio.sleep(0)  # a task of its own, as each operation of a batch
            return bind(of, raw, _decide)

        same = await asyncio.gather(*(one({"base": "EUR"}) for _ in range(3)))
        other = await one({"base": "EUR", "amount": 2})
        another_tool = await one({"base": "EUR"}, twin)
        for _ in range(2):
            with pytest.raises(InvalidParams):
                await one({"base": "EUR", "extra": 1})
    assert all(b.ph == alone.ph and b.params == alone.params for b in same)
    assert len({id(b.params) for b in same}) == 3  # each operation has params of its own
    same[0].params["base"] = "GBP"
    assert same[1].params["base"] == "EUR"
    assert other.ph != alone.ph and another_tool.ph == alone.ph
    assert (shared.done, shared.reused) == (3, 2)
    assert bind(tool, {"base": "EUR"}, _decide).ph == alone.ph  # outside: no sharing
    assert (shared.done, shared.reused) == (3, 2)
