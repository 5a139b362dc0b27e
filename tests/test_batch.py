"""The batch handshake, attacked over raw NATS: every operation keeps its properties."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
import uuid
from functools import partial
from typing import Any

import jwt
import nats
import pytest
import rfc8785

from mcp_handshake.client import CallResult, HandshakeClient
from mcp_handshake.services.dev.devstack import Stack
from mcp_handshake.services.store import Counters
from mcp_handshake.services.store.coalesce import Coalescer, Member
from mcp_handshake.services.store.scripts import Batch, Scripts
from tests import test_nats_permissions as perms
from tests.conftest import AgentKey, Raw, connected, ph_of
from tests.test_audit import events, story
from tests.test_client import agent

RATE = {"base": "EUR", "quote": "USD"}
LIST = {"status": None, "limit": 20}
EXCHANGE, INVOICES = "payments.get_exchange_rate", "payments.list_invoices"

secured_nats = perms.secured_nats


def batch_proof(key: AgentKey, pairs: list[tuple[str, str]], **override: Any) -> str:
    """A batch proof (protocol.md, "Batch") built with plain PyJWT."""
    claims = {"ops": sorted([txn, ph] for txn, ph in set(pairs)),
              "iat": int(time.time()), "jti": uuid.uuid4().hex, **override}  # fmt: skip
    headers = {"typ": "handshake-batch-proof+jwt", "kid": key.thumbprint, "jwk": key.jwk}
    return jwt.encode(claims, key.private, algorithm="EdDSA", headers=headers)


async def authorize_many(raw: Raw, session: str, ops: list[tuple[str, dict[str, Any]]]) -> Any:
    body = {"ops": [{"tool": tool, "params": params} for tool, params in ops]}
    r = await raw.request("handshake.v1.authorize.batch", body, session)
    assert r.error is None, r.body
    return r.body["results"]


def op(grant: dict[str, Any], tool: str, params: dict[str, Any]) -> dict[str, Any]:
    return {"transaction_id": grant["transaction_id"], "tool": tool, "params": params,
            "token": grant["token"]}  # fmt: skip


async def execute_many(
    raw: Raw, session: str, ops: list[dict[str, Any]], proof: str | None = None
) -> Any:
    headers = {"Handshake-Proof": proof} if proof else None
    r = await raw.request("handshake.v1.execute.batch", {"ops": ops}, session, headers)
    assert r.error is None, r.body
    return r.body["results"]


def code(result: dict[str, Any]) -> str | None:
    return result["error"]["code"] if "error" in result else None


async def calls(raw: Raw) -> int:
    """Calls the demo target received so far."""
    return sum((await raw.target_stats())["calls"].values())


async def jwks_key(raw: Raw) -> Any:
    keys = (await raw.request(raw.s.keys, {})).body["keys"]
    return jwt.PyJWK(keys[0]).key


async def test_authorize_batch_grants_each_op_its_own_token(raw: Raw) -> None:
    alice = raw.session("alice", "billing")
    rates = [{"base": "EUR", "quote": q} for q in ("USD", "GBP", "JPY")]
    results = await authorize_many(raw, alice, [(EXCHANGE, p) for p in rates]
                                   + [("no.such_tool", {}), (EXCHANGE, {"base": 1})])  # fmt: skip
    grants = results[:3]
    assert [code(r) for r in results[3:]] == ["unknown_tool", "invalid_params"]
    assert len({g["token"] for g in grants}) == 3
    assert len({g["transaction_id"] for g in grants}) == 3
    for g, params in zip(grants, rates, strict=True):
        assert g["status"] == "granted" and g["params_hash"] == ph_of(params)


async def test_execute_batch_each_op_has_a_receipt_verifiable_alone(raw: Raw) -> None:
    alice = raw.session("alice", "billing")
    rates = [{"base": "EUR", "quote": q} for q in ("USD", "GBP")]
    grants = await authorize_many(raw, alice, [(EXCHANGE, p) for p in rates])
    results = await execute_many(
        raw, alice, [op(g, EXCHANGE, p) for g, p in zip(grants, rates, strict=True)]
    )
    key = await jwks_key(raw)
    for g, r in zip(grants, results, strict=True):
        claims = jwt.decode(r["receipt"], key, algorithms=["EdDSA"])
        assert claims["txn"] == g["transaction_id"] and claims["ph"] == g["params_hash"]
        assert claims["rh"] == "sha256:" + hashlib.sha256(rfc8785.dumps(r["result"])).hexdigest()
        head, payload, sig = r["receipt"].split(".")
        other = results[1 - results.index(r)]["receipt"].split(".")[2]
        for forged in (f"{head}.{payload}.{other}", f"{head}.{payload}.{sig[:-4]}AAAA"):
            with pytest.raises(jwt.InvalidSignatureError):
                jwt.decode(forged, key, algorithms=["EdDSA"])


async def test_token_of_another_user_is_refused_for_that_op_alone(raw: Raw) -> None:
    alice, bob = raw.session("alice", "billing"), raw.session("bob-b", "billing")
    mine = (await authorize_many(raw, alice, [(EXCHANGE, RATE)]))[0]
    theirs = (await authorize_many(raw, bob, [(EXCHANGE, RATE)]))[0]
    before = await calls(raw)
    results = await execute_many(raw, alice, [op(mine, EXCHANGE, RATE), op(theirs, EXCHANGE, RATE)])
    assert code(results[0]) is None and code(results[1]) == "invalid_transaction"
    assert await calls(raw) == before + 1


async def test_same_token_twice_in_one_batch_runs_once(raw: Raw) -> None:
    alice = raw.session("alice", "billing")
    g = (await authorize_many(raw, alice, [(EXCHANGE, RATE)]))[0]
    before = await calls(raw)
    results = await execute_many(raw, alice, [op(g, EXCHANGE, RATE)] * 3)
    assert sorted(map(str, map(code, results))) == ["None", *["invalid_transaction"] * 2]
    assert await calls(raw) == before + 1
    # each copy leaves its own audit events: one success, two refusals
    txn = g["transaction_id"]
    for _ in range(50):
        mine = [e["kind"] for e in events(raw.stack) if e.get("txn") == txn]
        if mine.count("execute.denied") >= 2 and "receipt.issued" in mine:
            break
        await asyncio.sleep(0.2)
    assert mine.count("execute.denied") == 2 and mine.count("execute.succeeded") == 1, mine


async def test_same_token_in_two_concurrent_batches_runs_once(raw: Raw) -> None:
    alice = raw.session("alice", "billing")
    g = (await authorize_many(raw, alice, [(EXCHANGE, RATE)]))[0]
    before = await calls(raw)
    one = [op(g, EXCHANGE, RATE)]
    both = await asyncio.gather(*(execute_many(raw, alice, one) for _ in range(4)))
    codes = sorted(str(code(r[0])) for r in both)
    assert codes == ["None", *["invalid_transaction"] * 3]
    assert await calls(raw) == before + 1


async def test_proof_covering_fewer_ops_refuses_the_uncovered(raw: Raw) -> None:
    alice = raw.session("alice", "billing")
    lists = [{"status": s, "limit": 20} for s in ("paid", "open", None)]
    grants = await authorize_many(raw, alice, [(INVOICES, p) for p in lists])
    assert {g["tier"] for g in grants} == {"internal"}
    ops = [op(g, INVOICES, p) for g, p in zip(grants, lists, strict=True)]
    pairs = [(g["transaction_id"], g["params_hash"]) for g in grants[:2]]
    results = await execute_many(raw, alice, ops, batch_proof(raw.key("alice"), pairs))
    assert [code(r) for r in results] == [None, None, "validation_failed"]
    # the uncovered op's token is burnt, as by a refused single proof
    whole = [(g["transaction_id"], g["params_hash"]) for g in grants]
    again = await execute_many(raw, alice, ops[2:], batch_proof(raw.key("alice"), whole))
    assert code(again[0]) == "invalid_transaction"


async def test_batch_proof_replayed_or_by_another_key_is_refused(raw: Raw) -> None:
    alice = raw.session("alice", "billing")
    g = (await authorize_many(raw, alice, [(INVOICES, LIST)]))[0]
    pair = [(g["transaction_id"], g["params_hash"])]
    forged = await execute_many(raw, alice, [op(g, INVOICES, LIST)], batch_proof(AgentKey(), pair))
    assert code(forged[0]) == "validation_failed"
    g = (await authorize_many(raw, alice, [(INVOICES, LIST)]))[0]
    pair = [(g["transaction_id"], g["params_hash"])]
    proof = batch_proof(raw.key("alice"), pair)
    assert code((await execute_many(raw, alice, [op(g, INVOICES, LIST)], proof))[0]) is None
    g2 = (await authorize_many(raw, alice, [(INVOICES, LIST)]))[0]
    replay = await execute_many(raw, alice, [op(g2, INVOICES, LIST)], proof)
    assert code(replay[0]) == "validation_failed"  # a proof binds its pairs


async def test_batch_over_the_limits_is_payload_too_large_and_consumes_nothing(raw: Raw) -> None:
    alice = raw.session("alice", "billing")
    g = (await authorize_many(raw, alice, [(EXCHANGE, RATE)]))[0]
    fake = {"transaction_id": "x", "tool": EXCHANGE, "params": RATE, "token": "t"}
    too_many = {"ops": [op(g, EXCHANGE, RATE)] + [fake] * 256}
    r = await raw.request("handshake.v1.execute.batch", too_many, alice)
    assert r.error == "payload_too_large", r.body
    too_big = {"ops": [op(g, EXCHANGE, RATE), {**fake, "params": {"pad": "x" * 70_000}}]}
    r = await raw.request("handshake.v1.execute.batch", too_big, alice)
    assert r.error == "payload_too_large", r.body
    many = {"ops": [{"tool": EXCHANGE, "params": RATE}] * 257}
    r = await raw.request("handshake.v1.authorize.batch", many, alice)
    assert r.error == "payload_too_large", r.body
    assert code((await execute_many(raw, alice, [op(g, EXCHANGE, RATE)]))[0]) is None


async def _approve(raw: Raw, txn: str) -> None:
    """A human approver's signed decision, once the request reached the approvers' list."""
    victor = raw.session("victor", "approver")
    for _ in range(50):
        if await raw.preview_hash(victor, txn) is not None:
            break
        await asyncio.sleep(0.2)
    r = await raw.decide(victor, txn, "approve")
    assert r.error is None, r.body


async def test_mixed_batch_each_op_behaves_as_alone(raw: Raw) -> None:
    sub = "mia-" + uuid.uuid4().hex[:6]
    mia = raw.session(sub, "billing", "support", "treasury")
    customer = {"customer_id": "cus_8f3k2m9q"}
    payment = {"to_account": "acct_4f9d2a", "amount": 250.0, "currency": "EUR"}  # a human's
    calls = [(EXCHANGE, RATE), (INVOICES, LIST), ("customers.get_customer", customer),
             ("payments.send_payment", payment)]  # fmt: skip
    grants = await authorize_many(raw, mia, calls)
    assert [g["tier"] for g in grants] == ["public", "internal", "confidential", "restricted"]
    assert [g["status"] for g in grants] == ["granted"] * 3 + ["pending_approval"]
    ops = [op(g, tool, p) for g, (tool, p) in zip(grants, calls, strict=True)]
    pairs = [(g["transaction_id"], g["params_hash"]) for g in grants]
    results = await execute_many(raw, mia, ops, batch_proof(raw.key(sub), pairs))
    assert [code(r) for r in results] == [None, None, None, "approval_pending"], results
    alone = (await raw.authorize(mia, "customers.get_customer", customer)).body
    single = await raw.execute(mia, alone, "customers.get_customer", customer)
    assert single.body["result"] == results[2]["result"]  # masked as alone
    await _approve(raw, grants[3]["transaction_id"])  # the pending one, executed later
    later = await execute_many(raw, mia, ops[3:], batch_proof(raw.key(sub), pairs[3:]))
    assert code(later[0]) is None, later
    base = {"authorize.granted", "execute.intent", "execute.succeeded", "receipt.issued"}
    for g in grants:
        kinds = base | ({"approval.requested", "approval.decided"} if g["tier"] == "restricted"
                        else set())  # fmt: skip
        mine = await story(raw.stack, g["transaction_id"], kinds)
        assert kinds <= {e["kind"] for e in mine}, (g["tier"], mine)
        assert all(e["sub"] == sub for e in mine if "sub" in e)
        assert sum(e["kind"] == "execute.succeeded" for e in mine) == 1
    text = json.dumps(events(raw.stack))
    assert not any(g["token"] in text for g in grants) and "acct_4f9d2a" not in text


async def test_agent_cannot_publish_internal_batch_dispatches(secured_nats: str) -> None:
    executor = await perms._connect(secured_nats, "executor")
    received: list[bytes] = []

    async def cb(msg: nats.aio.msg.Msg) -> None:
        received.append(msg.data)

    subject = "handshake.internal.batch.executor.payments"
    await executor.subscribe(subject, cb=cb)
    await executor.flush()
    errors: list[Exception] = []
    agent = await perms._connect(secured_nats, "agent", errors)
    await agent.publish(subject, b'{"items":[]}')
    await agent.publish("handshake.v1.execute.batch", b"{}")  # allowed: a public subject
    await agent.flush()
    await asyncio.sleep(0.3)
    assert received == [] and perms._violations(errors) == 1, errors
    execute = await perms._connect(secured_nats, "execute")
    await execute.publish(subject, b"ok")
    await execute.flush()
    await asyncio.sleep(0.3)
    assert received == [b"ok"]
    for nc in (executor, agent, execute):
        await nc.close()


def spied(hs: HandshakeClient) -> list[str]:
    """The subjects ``hs`` sends requests to, from now on."""
    subjects: list[str] = []
    nc: Any = hs._nc
    request = nc.request

    async def spy(subject: str, *args: Any, **kw: Any) -> Any:
        subjects.append(subject)
        return await request(subject, *args, **kw)

    nc.request = spy
    return subjects


async def test_call_many_uses_batches_and_keeps_each_outcome(stack: Stack) -> None:
    payment = {"to_account": "acct_4f9d2a", "amount": 7.0, "currency": "EUR"}
    usd = {"base": "USD", "quote": "EUR"}
    calls = [(EXCHANGE, RATE), (INVOICES, LIST), ("nope.tool", {}), (EXCHANGE, {"base": 1}),
             ("payments.send_payment", payment), (EXCHANGE, usd)]  # fmt: skip
    async with agent(stack, "nina-" + uuid.uuid4().hex[:6], "billing", "treasury") as hs:
        subjects = spied(hs)
        results = await hs.call_many(calls, concurrency=8)
    names = [type(r).__name__ for r in results]
    assert names == ["CallResult", "CallResult", "UnknownTool", "InvalidParams", "CallResult",
                     "CallResult"], results  # fmt: skip
    for (tool, _), r in zip(calls, results, strict=True):
        if isinstance(r, CallResult):
            assert r.claims["tool"] == tool
    assert subjects.count("handshake.v1.authorize.batch") == 1
    assert "handshake.v1.execute.batch" in subjects and "handshake.v1.authorize" not in subjects


async def test_stream_uses_batches_sized_by_the_window(stack: Stack) -> None:
    rates = [(EXCHANGE, {"base": "EUR", "quote": q}) for q in ("USD", "GBP", "JPY", "CHF") * 10]
    async with agent(stack, "olga", "billing") as hs:
        subjects = spied(hs)
        seen = {i: o async for i, o in hs.stream(iter(rates), concurrency=8)}
    assert sorted(seen) == list(range(40))
    assert all(isinstance(o, CallResult) for o in seen.values()), seen
    batches = subjects.count("handshake.v1.execute.batch")
    assert 5 <= batches < 40 and "handshake.v1.execute" not in subjects, subjects


class CountingScripts(Scripts):
    """The store's scripts, counting round trips (pipelines and single calls)."""

    batches = 0
    calls = 0

    def batch(self) -> Batch:
        self.batches += 1
        return super().batch()

    async def call(self, name: str, keys: Any, args: Any) -> Any:
        self.calls += 1
        return await super().call(name, keys, args)


async def test_first_store_steps_of_a_batch_share_one_round_trip(redis: Any) -> None:
    scripts = CountingScripts(redis)
    key = "handshake:test:coalesce:" + uuid.uuid4().hex
    await scripts.call("count", [key + ":warm"], [10_000])  # Redis now holds the script
    scripts.calls = 0
    coalescer = Coalescer(scripts, 4)

    async def one(member: Member, counts: bool) -> list[int]:
        try:
            if not counts:
                return []
            first, _ = await Counters(member).count(key, 10)
            second, _ = await Counters(member).count(key, 10)  # later calls go straight
            return [first, second]
        finally:
            member.leave()

    out = await asyncio.gather(*(one(coalescer.member(), i < 3) for i in range(4)))
    assert sorted(o[0] for o in out if o) == [1, 2, 3]
    assert sorted(o[1] for o in out if o) == [4, 5, 6]
    assert (scripts.batches, scripts.calls) == (1, 3)


async def test_one_signed_dispatch_per_batch_and_a_replay_runs_nothing(raw: Raw) -> None:
    """The executor sees one message for the batch; replayed or altered, it runs nothing."""
    seen: list[tuple[bytes, dict[str, str]]] = []
    singles: list[tuple[bytes, dict[str, str]]] = []
    async with connected(raw.stack, "executor") as spy, connected(raw.stack, "execute") as ex:
        subject = "handshake.internal.batch.executor.payments"
        await spy.nc.subscribe(subject, cb=partial(_keep, seen))
        await spy.nc.subscribe("handshake.internal.executor.payments", cb=partial(_keep, singles))
        await spy.nc.flush()
        alice = raw.session("alice", "billing")
        rates = [{"base": "EUR", "quote": q} for q in ("USD", "GBP", "JPY")]
        grants = await authorize_many(raw, alice, [(EXCHANGE, p) for p in rates])
        ops = [op(g, EXCHANGE, p) for g, p in zip(grants, rates, strict=True)]
        assert [code(r) for r in await execute_many(raw, alice, ops)] == [None] * 3
        assert len(seen) == 1 and singles == []
        data, headers = seen[0]
        assert data.count(b'"txn"') == 3 and "Handshake-Dispatch-Signature" in headers
        before = await calls(raw)
        replay = await ex.request(subject, data, headers=headers)
        assert replay.error is None, replay.body
        assert {code(r) for r in replay.body["results"]} == {"forbidden"}  # already run
        altered = data.replace(b'"USD"', b'"CHF"')
        forged = await ex.request(subject, altered, headers=headers)
        assert forged.error == "forbidden"  # the signature no longer verifies
        assert await calls(raw) == before


async def _keep(into: list[tuple[bytes, dict[str, str]]], msg: nats.aio.msg.Msg) -> None:
    into.append((msg.data, dict(msg.headers or {})))
