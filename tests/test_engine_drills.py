"""Failure drills on the engines of a real deployment (``make test-cluster``).

A three-node NATS cluster (audit and approval streams, key and pending buckets with
three replicas) and a Redis Cluster or Sentinel topology, every worker kind, and agents
calling a tool whose effect the target does not de-duplicate. With that traffic
running: SIGKILL the NATS node leading the audit stream, then take the Redis master
away. Required, and printed with the figures:

- no operation runs twice (the target's ledger), and no token runs again afterwards;
- no audit event is lost: every granted transaction has its ``authorize.granted``, every
  executed one its ``execute.succeeded`` and ``receipt.issued`` in the hash-chained log;
- the failover window answers ``unavailable`` (a request whose worker was connected to
  the killed node gets no reply; a token issued just before the Redis master died may
  be gone: ``invalid_transaction``, never a second run; a dispatch whose executor was
  connected to the killed node is ``outcome_unknown``, and ran at most once);
- full service is back within seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import nats
import pytest
from nats.errors import Error as NatsError

from mcp_handshake.services.dev.devstack import Stack, StackSpec
from mcp_handshake.services.runtime.audit import STREAM
from tests.conftest import ENGINES, Raw, Topology, engine_stack
from tests.support.redis_topologies import ClusterTopology, SentinelTopology
from tests.test_audit import events

pytestmark = pytest.mark.skipif(
    ENGINES not in ("cluster", "sentinel"),
    reason="failure drills run under `make test-cluster` (HANDSHAKE_TEST_ENGINES)",
)

TOOL = "test.slow_plain_post"  # a POST without Idempotency-Key: a second run would show
SPEC = StackSpec(authorize=2, execute=2, executor=2, approval=1, audit=1)
AGENTS = 6  # concurrent callers
STREAK = 20  # consecutive successes that count as "service is back"
#: Outcomes a failover window may answer (see the module docstring).
WINDOW_OUTCOMES = {"ok", "authorize:unavailable", "execute:unavailable", "no_reply",
                   "execute:invalid_transaction", "execute:outcome_unknown"}  # fmt: skip


@dataclass
class Call:
    start: float
    end: float
    outcome: str
    account: str
    txn: str | None = None


@dataclass
class Traffic:
    calls: list[Call] = field(default_factory=list)
    granted: dict[str, dict[str, Any]] = field(default_factory=dict)  # txn -> grant
    executed: set[str] = field(default_factory=set)
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    def between(self, t: float, until: float = float("inf")) -> list[Call]:
        return sorted((c for c in self.calls if t <= c.end < until), key=lambda c: c.end)

    def back_after(self, t: float, until: float = float("inf")) -> float | None:
        """Seconds from ``t`` until the first of ``STREAK`` or more consecutive successes
        that last until ``until`` (None: service did not come back)."""
        streak_start: float | None = None
        run = 0
        for call in self.between(t, until):
            if call.outcome == "ok":
                run += 1
                if streak_start is None:
                    streak_start = call.end
            else:
                run, streak_start = 0, None
        return None if streak_start is None or run < STREAK else streak_start - t


async def _request(raw: Raw, subject: str, body: dict[str, Any], session: str,
                   headers: dict[str, str] | None = None) -> Any:  # fmt: skip
    return await raw.request(subject, body, session, headers, timeout=5.0)


async def _one(raw: Raw, session: str, traffic: Traffic) -> None:
    account = "acct-" + uuid.uuid4().hex[:16]
    params = {"to_account": account, "amount": 1.0, "currency": "USD", "delay_s": 0}
    call = Call(time.monotonic(), 0.0, "", account)
    try:
        g = await _request(raw, raw.s.authorize, {"tool": TOOL, "params": params}, session)
        if g.error is not None:
            call.outcome = f"authorize:{g.error}"
            return
        call.txn = g.body["transaction_id"]
        traffic.granted[call.txn] = g.body
        body = {"transaction_id": call.txn, "tool": TOOL, "params": params}
        headers = {"Handshake-Transaction-Token": g.body["token"]}
        r = await _request(raw, raw.s.execute, body, session, headers)
        call.outcome = "ok" if r.error is None else f"execute:{r.error}"
        if r.error is None:
            traffic.executed.add(call.txn)
    except (TimeoutError, NatsError):
        call.outcome = "no_reply"
    finally:
        call.end = time.monotonic()
        traffic.calls.append(call)


async def _agent(raw: Raw, session: str, traffic: Traffic) -> None:
    while not traffic.stop.is_set():
        await _one(raw, session, traffic)
        if traffic.calls[-1].outcome != "ok":
            await asyncio.sleep(0.05)  # an agent backs off a little on errors


async def _stream_leaders(stack: Stack) -> dict[str, str]:
    """Stream name -> the server name of its leader."""
    nc = await nats.connect(**stack.connect_options("operator"))
    try:
        js = nc.jetstream()
        leaders = {}
        for name in (STREAM, "HANDSHAKE_APPROVALS", "KV_HANDSHAKE_PENDING"):
            with contextlib.suppress(NatsError, TimeoutError):
                info = await js.stream_info(name)
                if info.cluster is not None and info.cluster.leader:
                    leaders[name] = info.cluster.leader
        return leaders
    finally:
        await nc.close()


def _kill_nats_node(stack: Stack, name: str) -> None:
    proc = next(p for p in stack.procs if p.name == name)
    proc.popen.send_signal(signal.SIGKILL)
    proc.popen.wait()


def _fail_redis(topology: Topology) -> str:
    """SIGKILL a Redis master and wait for its replica's promotion; what was done."""
    if isinstance(topology, SentinelTopology):
        old = topology.master()
        new = topology.kill_master()
        return f"SIGKILL Redis master {old.address}; Sentinel promoted {new.address}"
    assert isinstance(topology, ClusterTopology)
    master = topology.masters()[0]
    replica = topology.replica_of(master)
    master.kill()
    topology.wait_ok(60)
    return f"SIGKILL Redis Cluster master {master.address}; promoted {replica.address}"


async def _drill(stack: Stack, topology: Topology, report: dict[str, Any]) -> Traffic:
    traffic = Traffic()
    leaders = await _stream_leaders(stack)
    victim = leaders[STREAM]
    report["stream leaders"] = leaders
    # The agents connect to the nodes that stay up: what is measured is the mediator.
    survivors = [n.url for n in stack.nats_cluster if n.name != victim]
    options = {**stack.connect_options(), "servers": survivors}
    nc = await nats.connect(**options)
    raw = Raw(nc, stack)
    session = raw.session("drill-agent", "support", ttl_s=3600)
    agents = [asyncio.create_task(_agent(raw, session, traffic)) for _ in range(AGENTS)]
    try:
        await asyncio.sleep(3)
        t_nats = time.monotonic()
        await asyncio.to_thread(lambda: _kill_nats_node(stack, victim))
        led = sorted(k for k, v in leaders.items() if v == victim)
        report["nats fault"] = f"SIGKILL {victim}, the leader of {led}"
        await _until_back(traffic, t_nats, 45)
        await asyncio.sleep(2)
        node = next(n for n in stack.nats_cluster if n.name == victim)
        await asyncio.to_thread(lambda: stack.start_nats_node(node))  # it rejoins as a follower
        await asyncio.sleep(2)
        t_redis = time.monotonic()
        report["redis fault"] = await asyncio.to_thread(lambda: _fail_redis(topology))
        await _until_back(traffic, t_redis, 45)
        await asyncio.sleep(2)
    finally:
        traffic.stop.set()
        await asyncio.gather(*agents)
        await nc.close()
    report["windows"] = {"nats": _window(traffic, t_nats, t_redis),
                         "redis": _window(traffic, t_redis, float("inf"))}  # fmt: skip
    return traffic


async def _until_back(traffic: Traffic, t: float, budget: float) -> None:
    deadline = time.monotonic() + budget
    while True:
        if traffic.back_after(t) is not None or time.monotonic() > deadline:
            return
        await asyncio.sleep(0.25)


def _window(traffic: Traffic, t: float, until: float) -> dict[str, Any]:
    calls = traffic.between(t, until)
    back = traffic.back_after(t, until)
    return {"calls": len(calls), "outcomes": dict(Counter(c.outcome for c in calls)),
            "back_s": None if back is None else round(back, 2)}  # fmt: skip


async def _target_payments(stack: Stack) -> Counter[str]:
    key = (stack.home / "secrets" / "payments_api_key").read_text().strip()
    async with (
        aiohttp.ClientSession() as client,
        client.get(
            f"{stack.target_url}/_stats?payments=1", headers={"X-API-Key": key}
        ) as resp,  # fmt: skip
    ):
        data = await resp.json()
    return Counter(data["payments_to"])


def _missing_audit(stack: Stack, traffic: Traffic, timeout: float = 90.0) -> dict[str, int]:
    """Wait for the audit writer; the events of granted or executed transactions that
    are still not in the log."""
    deadline = time.monotonic() + timeout
    while True:
        seen: set[tuple[str, str]] = {(e.get("txn", ""), e["kind"]) for e in events(stack)}
        missing: Counter[str] = Counter()
        for txn in traffic.granted:
            missing["authorize.granted"] += (txn, "authorize.granted") not in seen
        for txn in traffic.executed:
            for kind in ("execute.succeeded", "receipt.issued"):
                missing[kind] += (txn, kind) not in seen
        if not +missing or time.monotonic() > deadline:
            return dict(+missing)
        time.sleep(1)


async def _replays_refused(stack: Stack, traffic: Traffic) -> Counter[str]:
    """Every executed token presented again: refused, never run."""
    nc = await nats.connect(**stack.connect_options())
    try:
        raw = Raw(nc, stack)
        session = raw.session("drill-agent", "support", ttl_s=3600)
        outcomes: Counter[str] = Counter()
        for txn in sorted(traffic.executed):
            g = traffic.granted[txn]
            params = {"to_account": "replayed", "amount": 1.0, "currency": "USD", "delay_s": 0}
            body = {"transaction_id": txn, "tool": TOOL, "params": params}
            r = await _request(raw, raw.s.execute, body, session,
                               {"Handshake-Transaction-Token": g["token"]})  # fmt: skip
            outcomes[str(r.error)] += 1
        return outcomes
    finally:
        await nc.close()


@pytest.fixture(scope="module")
def drilled(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Stack, Topology]]:
    with engine_stack(tmp_path_factory.mktemp("drill"), SPEC) as (st, topology):
        assert topology is not None
        yield st, topology


@pytest.mark.timeout(600)
def test_node_and_master_failures_under_traffic(drilled: tuple[Stack, Topology]) -> None:
    stack, topology = drilled
    report: dict[str, Any] = {"engines": ENGINES}
    started = time.monotonic()
    traffic = asyncio.run(_drill(stack, topology, report))
    report["duration_s"] = round(time.monotonic() - started, 1)
    report["calls"] = len(traffic.calls)
    report["outcomes"] = dict(Counter(c.outcome for c in traffic.calls))
    report["granted"], report["executed"] = len(traffic.granted), len(traffic.executed)
    payments = asyncio.run(_target_payments(stack))
    doubles = {a: n for a, n in payments.items() if n > 1}
    report["double executions"] = len(doubles)
    unseen = [c.account for c in traffic.calls if c.txn in traffic.executed
              and payments[c.account] != 1]  # fmt: skip
    report["executed but not at the target"] = len(unseen)
    report["lost audit events"] = _missing_audit(stack, traffic)
    replays = asyncio.run(_replays_refused(stack, traffic))
    report["replays after the drill"] = dict(replays)
    print(f"\nengine drill ({ENGINES}):")
    for key, value in report.items():
        print(f"  {key}: {value}")
    assert not doubles and not unseen, report
    assert report["lost audit events"] == {}, report
    assert set(replays) == {"invalid_transaction"}, report
    assert set(report["outcomes"]) <= WINDOW_OUTCOMES, report
    for name, window in report["windows"].items():
        assert window["back_s"] is not None and window["back_s"] < 30, (name, report)
    assert report["executed"] > 100, report
