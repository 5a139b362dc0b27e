"""What a batch pays once, it still checks for each operation: the rounds of the batch path.

The executor's run markers of a batch go to Redis together and each is still
claimed once; a batch's audit events go to the stream together and each is still
its own event in the trail, the log verifying (the group itself:
``test_audit_groups``).
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, ConfigDict

from mcp_handshake.client import CallResult
from mcp_handshake.client._batch import Batcher
from mcp_handshake.services.audit.verify import verify_log
from mcp_handshake.services.core.config import PolicyDefaults
from mcp_handshake.services.core.policy import Caller
from mcp_handshake.services.core.signing import DispatchVerifier
from mcp_handshake.services.core.tools import Tier, Tool, ToolRegistry
from mcp_handshake.services.dev.demo.tools import TOOLS as DEMO_TOOLS
from mcp_handshake.services.dev.devstack import Stack
from mcp_handshake.services.executor.batch import ExecutorBatchDeps, handle_dispatch_batch
from mcp_handshake.services.executor.handler import ExecutorDeps
from mcp_handshake.services.policy import Agent, Policy, load_policy
from mcp_handshake.services.policy.compiled import compile_policy
from mcp_handshake.services.runtime.batch_policy import BatchDecisions
from mcp_handshake.services.runtime.endpoint import Request
from mcp_handshake.services.store import DispatchLog
from mcp_handshake.services.store.dispatches import Claim
from mcp_handshake.shared.batch import DispatchBatch
from mcp_handshake.shared.subjects import Keys
from mcp_handshake.shared.wire import Dispatch
from tests.test_audit import events, log_path
from tests.test_client import agent
from tests.test_perf_levers import js_url

__all__ = ["js_url"]  # the fixture, used here


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid")
    n: int


class CountingLog(DispatchLog):
    """The real dispatch log, counting the round trips of its claims."""

    def __init__(self, redis: Any) -> None:
        super().__init__(redis)
        self.singles = 0
        self.rounds: list[int] = []

    async def claim(self, txn: str, ttl_s: float, attempt: int = 0) -> bool:
        self.singles += 1
        return await super().claim(txn, ttl_s, attempt)

    async def claim_many(self, claims: Sequence[Claim]) -> list[bool]:
        self.rounds.append(len(claims))
        return await super().claim_many(claims)


class _Yes(DispatchVerifier):
    def __init__(self) -> None:
        pass

    def verify(self, signature: str | None, body: bytes) -> bool:
        return True


def _txn() -> str:
    return "t-" + uuid.uuid4().hex


async def test_claim_many_claims_each_marker_once(redis: Any) -> None:
    log = DispatchLog(redis)
    a, b, held = _txn(), _txn(), _txn()
    assert await log.claim(held, 30)
    won = await log.claim_many([(a, 30, 0), (a, 30, 0), (b, 30, 0), (held, 30, 0), (a, 30, 1)])
    assert won == [True, False, True, False, True]  # a reconcile run has a marker of its own
    assert not await log.claim(a, 30) and not await log.claim(b, 30)
    assert 0 < await redis.pttl(Keys.dispatched(b)) <= 30_000
    assert await log.claim_many([]) == []


async def test_executor_batch_claims_every_marker_in_one_round(redis: Any) -> None:
    ran: list[int] = []

    async def count(params: Mapping[str, Any], ctx: Any) -> Any:
        ran.append(params["n"])
        return {"n": params["n"]}

    tool = Tool("rounds.count", "counts", _Params, Tier.PUBLIC, "rounds", count)
    log = CountingLog(redis)
    deps = ExecutorDeps(_Yes(), ToolRegistry([tool]), {"rounds": object()}, log)  # type: ignore[dict-item]
    now = time.time()
    again, done = _txn(), _txn()
    assert await log.claim(done, 30)  # ran before: a replay inside a batch

    def item(txn: str, n: int, exp: float = now + 30) -> Dispatch:
        return Dispatch(txn=txn, sub="alice", tool=tool.name, target="rounds", params={"n": n},
                        ph="sha256:x", iat=now, exp=exp)  # fmt: skip

    items = [item(again, 1), item(again, 2), item(_txn(), 3, exp=now - 1), item(done, 4),
             item(_txn(), 5)]  # fmt: skip
    req = Request(DispatchBatch(items), b"{}", {}, "handshake.internal.batch.executor.rounds")
    reply = await handle_dispatch_batch(req, ExecutorBatchDeps(_Yes(), deps))
    codes = [getattr(r, "error", None) for r in reply.results]
    assert [c.code if c else None for c in codes] == [None, "forbidden", "forbidden",
                                                      "forbidden", None]  # fmt: skip
    assert "expired" in codes[2].message and "already run" in codes[1].message  # type: ignore[union-attr]
    assert sorted(ran) == [1, 5]
    assert log.rounds == [4] and log.singles == 1  # the expired item never claimed


@pytest.mark.parametrize("size", [1, 3])
async def test_executor_batch_where_no_item_claims_still_answers(redis: Any, size: int) -> None:
    tool = Tool("rounds.none", "none", _Params, Tier.PUBLIC, "rounds", lambda p, c: p)
    log = CountingLog(redis)
    deps = ExecutorDeps(_Yes(), ToolRegistry([tool]), {"rounds": object()}, log)  # type: ignore[dict-item]
    now = time.time()
    items = [Dispatch(txn=_txn(), sub="a", tool=tool.name, target="rounds", params={"n": 1},
                      ph="sha256:x", iat=now, exp=now - 1) for _ in range(size)]  # fmt: skip
    req = Request(DispatchBatch(items), b"{}", {}, "handshake.internal.batch.executor.rounds")
    reply = await handle_dispatch_batch(req, ExecutorBatchDeps(_Yes(), deps))
    assert len(reply.results) == size and log.rounds == []


async def test_a_streams_events_are_each_in_the_trail_once_and_the_log_verifies(
    stack: Stack,
) -> None:
    sub = "rhea-" + uuid.uuid4().hex[:6]
    rates = [("payments.get_exchange_rate", {"base": "EUR", "quote": q})
             for q in ("USD", "GBP", "JPY", "CHF") * 15]  # fmt: skip
    async with agent(stack, sub, "billing") as hs:
        done = {i: o async for i, o in hs.stream(iter(rates), concurrency=30)}
    assert len(done) == 60 and all(isinstance(o, CallResult) for o in done.values())
    txns = {o.transaction_id for o in done.values() if isinstance(o, CallResult)}
    kinds = ["authorize.granted", "execute.intent", "execute.succeeded", "receipt.issued"]
    deadline = time.monotonic() + 20
    while True:
        mine = [e for e in events(stack) if e.get("txn") in txns]
        if len(mine) >= 4 * len(txns) or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.2)
    for txn in txns:
        assert sorted(e["kind"] for e in mine if e["txn"] == txn) == sorted(kinds), txn
    assert {e["sub"] for e in mine} == {sub} and len({e["id"] for e in mine}) == len(mine)
    jwks = json.loads((stack.home / "keys" / "audit.jwks.json").read_text())
    result = verify_log(log_path(stack), jwks)
    assert result.ok, result


def _policy(text: str) -> Policy:
    return Policy(compile_policy(text, DEMO_TOOLS, PolicyDefaults()), DEMO_TOOLS)


def _bound(tool: str, params: dict[str, Any]) -> dict[str, Any]:
    return ToolRegistry(DEMO_TOOLS).get(tool).normalize(params)


PAY = "payments.send_payment"
ANYONE_PAYS = f"""
@id("small")
permit (principal, action == Action::"{PAY}", resource)
when {{ context.params.amount.lessThanOrEqual(decimal("1000.0")) }};
@id("no-rogue")
forbid (principal, action == Action::"{PAY}", resource)
when {{ context.agent has nats_user && context.agent.nats_user == "rogue" }};
@id("rates")
permit (principal, action == Action::"payments.get_exchange_rate", resource);
"""


def test_batch_decisions_ask_each_distinct_question_once() -> None:
    policy = _policy(ANYONE_PAYS)
    batch = BatchDecisions(policy)
    tess, other = (
        Caller("tess", frozenset({"treasury"}), frozenset()),
        Caller("ozzy", frozenset(), frozenset()),
    )
    small = _bound(PAY, {"to_account": "acct_4f9d2a", "amount": 10.0, "currency": "EUR"})
    big = _bound(PAY, {"to_account": "acct_4f9d2a", "amount": 5000.0, "currency": "EUR"})
    rate = _bound("payments.get_exchange_rate", {"base": "EUR", "quote": "USD"})
    usd = _bound("payments.get_exchange_rate", {"base": "USD", "quote": "EUR"})
    agent, rogue = Agent(nats_user="agent"), Agent(nats_user="rogue")
    asks = [(tess, PAY, small, agent), (tess, PAY, small, agent), (tess, PAY, big, agent),
            (tess, PAY, small, rogue), (other, PAY, small, agent),
            (tess, "payments.get_exchange_rate", rate, agent),
            (tess, "payments.get_exchange_rate", usd, agent)]  # fmt: skip
    for caller, tool, params, who in asks:
        alone = policy.decide(caller, tool, params, phase="execute", agent=who)
        assert batch.decide(caller, tool, params, phase="execute", agent=who) == alone
    verdicts = [batch.decide(c, t, p, phase="execute", agent=a).verdict for c, t, p, a in asks]
    assert verdicts == ["permit", "permit", "deny", "deny", "permit", "permit", "permit"]
    # asked: small, big, rogue, other caller, rate (params not read: usd is the same question)
    assert (batch.asked, batch.reused) == (5, 9)
    assert batch.decide(tess, PAY, small, phase="authorize", agent=agent).allowed
    assert batch.asked == 6  # another phase, another question
    assert batch.hash == policy.hash and batch.listable(tess, PAY)  # the rest is policy's


def test_batch_decisions_never_share_what_reads_the_time_or_a_reloaded_set(
    tmp_path: Path,
) -> None:
    timed = (
        ANYONE_PAYS
        + f"""
@id("night")
forbid (principal, action == Action::"{PAY}", resource) when {{ context.time.hour > 24 }};
"""
    )
    path = tmp_path / "policy.cedar"
    path.write_text(timed)
    policy = load_policy(path, DEMO_TOOLS)
    batch = BatchDecisions(policy)
    tess, agent = Caller("tess", frozenset(), frozenset()), Agent(nats_user="agent")
    small = _bound(PAY, {"to_account": "acct_4f9d2a", "amount": 10.0, "currency": "EUR"})
    rate = _bound("payments.get_exchange_rate", {"base": "EUR", "quote": "USD"})
    for _ in range(3):
        assert batch.decide(tess, PAY, small, phase="execute", agent=agent).allowed
        assert batch.decide(tess, "payments.get_exchange_rate", rate, phase="execute",
                            agent=agent).allowed  # fmt: skip
    assert (batch.asked, batch.reused) == (4, 2)  # the payment's policies read the time
    path.write_text(timed.replace('@id("rates")\npermit', '@id("rates")\nforbid'))
    assert policy.reload()
    denied = batch.decide(tess, "payments.get_exchange_rate", rate, phase="execute", agent=agent)
    assert denied.verdict == "deny" and batch.asked == 5


async def test_from_32_calls_in_flight_two_batches_of_half_as_many(stack: Stack) -> None:
    sizes: dict[int, list[int]] = {16: [], 64: []}
    rates = [("payments.get_exchange_rate", {"base": "EUR", "quote": q})
             for q in ("USD", "GBP", "JPY", "CHF") * 16]  # fmt: skip
    async with agent(stack, "ivy-" + uuid.uuid4().hex[:6], "billing") as hs:
        nc: Any = hs._nc
        request = nc.request
        for concurrency, seen in sizes.items():

            async def spy(subject: str, payload: bytes = b"", *a: Any, **kw: Any) -> Any:
                if subject.endswith("authorize.batch"):
                    seen.append(len(json.loads(payload)["ops"]))  # noqa: B023
                return await request(subject, payload, *a, **kw)

            nc.request = spy
            done = [o async for _, o in hs.stream(iter(rates), concurrency=concurrency)]
            assert len(done) == 64 and all(isinstance(o, CallResult) for o in done)
    assert max(sizes[16]) == 16 and sum(sizes[16]) == 64
    assert max(sizes[64]) == 32 and sum(sizes[64]) == 64 and len(sizes[64]) >= 2


def test_batch_windows_by_calls_in_flight() -> None:
    calls: Any = None
    windows = {n: Batcher(calls, n)._window for n in (1, 16, 31, 32, 64, 256, 1024, 5000)}
    assert windows == {1: 1, 16: 16, 31: 31, 32: 16, 64: 32, 256: 128, 1024: 128, 5000: 128}
