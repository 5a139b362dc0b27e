"""Merkle batch receipts (protocol.md, "Merkle batch receipts"), over raw NATS and
attacked: every tampered operation is refused alone, the others still verify."""

from __future__ import annotations

import copy
import hashlib
import json
from typing import Any

import jwt
import msgspec
import pytest
import rfc8785
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from mcp_handshake.client import CallResult, HandshakeClient
from mcp_handshake.services.console.receipts import check_receipt
from mcp_handshake.services.dev.devstack import Stack
from mcp_handshake.shared import protocol
from mcp_handshake.shared.errors import BadRequest, InvalidTransaction, ValidationFailed
from mcp_handshake.shared.wire import Grant
from tests.conftest import Raw
from tests.test_batch import EXCHANGE, authorize_many, code, jwks_key, op
from tests.test_client import agent

RATES = [{"base": "EUR", "quote": q} for q in ("USD", "GBP", "JPY", "CHF", "CAD")]
BATCH_TYP = "handshake-batch-receipt+jwt"
INVOICES = "payments.list_invoices"


def mth(leaves: list[bytes]) -> bytes:
    """RFC 9162 2.1.1, written out here independently of the service's code."""
    if len(leaves) == 1:
        return hashlib.sha256(b"\x00" + leaves[0]).digest()
    k = 1
    while k * 2 < len(leaves):
        k *= 2
    return hashlib.sha256(b"\x01" + mth(leaves[:k]) + mth(leaves[k:])).digest()


async def merkle_batch(raw: Raw, session: str, extra: list[dict[str, Any]] = ()) -> Any:  # type: ignore[assignment]
    """Authorize and execute the rates as one Merkle batch (``extra`` ops appended)."""
    grants = await authorize_many(raw, session, [(EXCHANGE, p) for p in RATES])
    ops = [op(g, EXCHANGE, p) for g, p in zip(grants, RATES, strict=True)] + list(extra)
    r = await raw.request(raw.s.execute_batch, {"ops": ops, "receipts": "merkle"}, session)
    assert r.error is None, r.body
    return grants, r.body


def envelope(body: dict[str, Any], i: int) -> dict[str, Any]:
    """Operation ``i``'s receipt on its own, as the client assembles it."""
    inc = body["results"][i]["inclusion"]
    return {"root": body["batch_receipt"], "index": inc["index"], "path": inc["path"],
            "leaf": inc["leaf"]}  # fmt: skip


async def check(hs: HandshakeClient, receipt: dict[str, Any], result: Any, g: Any) -> Any:
    grant = msgspec.convert(g, Grant)
    return await hs.verify_receipt(json.dumps(receipt), result, grant, EXCHANGE)


async def test_one_signed_root_and_each_op_verifies_alone(raw: Raw) -> None:
    alice, bob = raw.session("alice", "billing"), raw.session("bob-b", "billing")
    theirs = (await authorize_many(raw, bob, [(EXCHANGE, RATES[0])]))[0]
    grants, body = await merkle_batch(raw, alice, [op(theirs, EXCHANGE, RATES[0])])
    results = body["results"]
    assert code(results[-1]) == "invalid_transaction" and "inclusion" not in results[-1]
    assert all("receipt" not in r for r in results)
    key = await jwks_key(raw)
    root = jwt.decode(body["batch_receipt"], key, algorithms=["EdDSA"])
    assert jwt.get_unverified_header(body["batch_receipt"])["typ"] == BATCH_TYP
    assert root["size"] == 5 and root["tree"] == "rfc9162-sha256" and root["sub"] == "alice"
    leaves = [rfc8785.dumps(r["inclusion"]["leaf"]) for r in results[:5]]
    assert root["root"] == mth(leaves).hex()
    for i, (g, r) in enumerate(zip(grants, results, strict=False)):
        leaf = r["inclusion"]["leaf"]
        assert r["inclusion"]["index"] == i and leaf["txn"] == g["transaction_id"]
        assert leaf["rh"] == "sha256:" + hashlib.sha256(rfc8785.dumps(r["result"])).hexdigest()
        assert leaf["iss"] == root["iss"] and leaf["ph"] == g["params_hash"]


async def test_an_unknown_receipts_mode_is_refused_whole(raw: Raw) -> None:
    alice = raw.session("alice", "billing")
    g = (await authorize_many(raw, alice, [(EXCHANGE, RATES[0])]))[0]
    body = {"ops": [op(g, EXCHANGE, RATES[0])], "receipts": "none"}
    r = await raw.request(raw.s.execute_batch, body, alice)
    assert r.error == "bad_request"
    plain = await raw.request(raw.s.execute_batch, {"ops": body["ops"]}, alice)
    assert "batch_receipt" not in plain.body and plain.body["results"][0]["receipt"]


def flip(hexstr: str) -> str:
    return ("0" if hexstr[0] != "0" else "1") + hexstr[1:]


def resigned(root: str) -> str:
    """The same root claims and header, signed with a key that is not the mediator's."""
    claims = jwt.decode(root, options={"verify_signature": False})
    header = jwt.get_unverified_header(root)
    return jwt.encode(claims, Ed25519PrivateKey.generate(), algorithm="EdDSA",
                      headers={"typ": header["typ"], "kid": header["kid"]})  # fmt: skip


async def test_tampered_batch_receipts_are_refused_each_alone(stack: Stack, raw: Raw) -> None:
    alice = raw.session("alice", "billing")
    grants, body = await merkle_batch(raw, alice)
    _, other = await merkle_batch(raw, alice)
    r = body["results"]
    alone = (await authorize_many(raw, alice, [(EXCHANGE, RATES[0])]))[0]
    single = await raw.request(raw.s.execute_batch, {"ops": [op(alone, EXCHANGE, RATES[0])]}, alice)
    a_receipt = single.body["results"][0]["receipt"]
    forged = [copy.deepcopy(envelope(body, i)) for i in range(5)]
    results = [x["result"] for x in r]
    forged[0]["path"][0] = flip(forged[0]["path"][0])  # path altered
    results[1], results[2] = results[2], results[1]  # results swapped between two ops
    forged[3]["root"] = resigned(body["batch_receipt"])  # root re-signed, another key
    forged[4]["path"] = envelope(other, 4)["path"]  # a path from another batch
    forged[4]["leaf"] = envelope(other, 4)["leaf"]
    async with agent(stack, "alice", "billing") as hs:
        outcomes = []
        for i in range(5):
            try:
                outcomes.append(await check(hs, forged[i], results[i], grants[i]))
            except (ValidationFailed, InvalidTransaction) as exc:
                outcomes.append(type(exc))
        assert outcomes == [ValidationFailed, InvalidTransaction, InvalidTransaction,
                            ValidationFailed, ValidationFailed]  # fmt: skip
        # Untouched, every one verifies; a leaf moved to another index does not.
        for i in range(5):
            assert (await check(hs, envelope(body, i), r[i]["result"], grants[i]))["txn"]
        moved = {**envelope(body, 0), "index": 1}
        with pytest.raises(ValidationFailed):
            await check(hs, moved, r[0]["result"], grants[0])
        swapped_leaf = {**envelope(body, 0), "leaf": envelope(body, 1)["leaf"]}
        with pytest.raises(ValidationFailed):
            await check(hs, swapped_leaf, r[0]["result"], grants[0])
        # A root is no single receipt, and a single receipt no root.
        grant0 = msgspec.convert(grants[0], Grant)
        with pytest.raises(ValidationFailed):
            await hs.verify_receipt(body["batch_receipt"], r[0]["result"], grant0, EXCHANGE)
        with pytest.raises(ValidationFailed):
            await check(hs, {**envelope(body, 0), "root": a_receipt}, r[0]["result"], grants[0])


def tampering(monkeypatch: pytest.MonkeyPatch, change: Any) -> list[dict[str, Any]]:
    """Every execute batch the client sends goes through ``change(body) -> reply``."""
    real, bodies = protocol.request, []

    async def request(nc: Any, subject: str, body: Any, kind: Any, **kw: Any) -> Any:
        if not subject.endswith("execute.batch"):
            return await real(nc, subject, body, kind, **kw)
        bodies.append(body)
        return await change(lambda b: real(nc, subject, b, kind, **kw), body)

    monkeypatch.setattr(protocol, "request", request)
    return bodies


async def test_call_many_refuses_a_tampered_op_alone(stack: Stack, monkeypatch: Any) -> None:
    async def altered(send: Any, body: Any) -> Any:
        reply = await send(body)
        reply.results[1]["inclusion"]["path"][0] = flip(reply.results[1]["inclusion"]["path"][0])
        return reply

    bodies = tampering(monkeypatch, altered)
    async with agent(stack, "alice", "billing") as hs:
        out = await hs.call_many([(EXCHANGE, p) for p in RATES[:4]])
    assert [type(o) for o in out] == [CallResult, ValidationFailed, CallResult, CallResult]
    assert bodies[0]["receipts"] == "merkle"
    good = out[0]
    assert isinstance(good, CallResult) and json.loads(good.receipt)["index"] == 0


async def test_a_mediator_without_merkle_receipts_is_used_as_before(
    stack: Stack, monkeypatch: Any
) -> None:
    async def refused(send: Any, body: Any) -> Any:  # a mediator before the option
        if "receipts" in body:
            raise BadRequest("Object contains unknown field `receipts`")
        return await send(body)

    bodies = tampering(monkeypatch, refused)
    async with agent(stack, "alice", "billing") as hs:
        out = await hs.call_many([(EXCHANGE, p) for p in RATES[:3]])
        again = await hs.call_many([(EXCHANGE, p) for p in RATES[:3]])
    for o in out + again:
        assert isinstance(o, CallResult)
        assert jwt.get_unverified_header(o.receipt)["typ"] == "handshake-receipt+jwt"
    assert ["receipts" in b for b in bodies] == [True, False, False]  # asked once per client


async def test_single_receipts_still_when_asked(stack: Stack) -> None:
    async with agent(stack, "alice", "billing", batch_receipts="single") as hs:
        out = await hs.call_many([(EXCHANGE, p) for p in RATES[:3]])
    assert all(isinstance(o, CallResult) and o.receipt.count(".") == 2 for o in out)


async def test_results_of_a_merkle_batch_are_the_clients_call_results(stack: Stack) -> None:
    async with agent(stack, "alice", "billing") as hs:
        out = await hs.call_many([(EXCHANGE, p) for p in RATES])
        assert all(isinstance(o, CallResult) for o in out)
        roots = {json.loads(o.receipt)["root"] for o in out if isinstance(o, CallResult)}
        assert len(roots) == 1
        res = out[2]
        assert isinstance(res, CallResult) and res.claims["txn"] == res.transaction_id
        tampered = copy.deepcopy(json.loads(res.receipt))
        tampered["leaf"]["rh"] = "sha256:" + "0" * 64
        grant = Grant(res.transaction_id, "", "granted", "public", res.claims["ph"], 0)
        with pytest.raises(ValidationFailed):
            await hs.verify_receipt(json.dumps(tampered), res.result, grant, EXCHANGE)


async def test_the_console_checks_a_batch_receipt(stack: Stack) -> None:
    """The console's receipt page (``console.receipts.check_receipt``) takes an
    operation's batch receipt as it takes a single one."""
    async with agent(stack, "alice", "billing") as hs:
        out = await hs.call_many([(EXCHANGE, p) for p in RATES[:3]])
        res = out[1]
        assert isinstance(res, CallResult)
        leaf = json.loads(res.receipt)["leaf"]
        trail = [{"kind": "receipt.issued", **{k: leaf[k] for k in ("tool", "ph", "rh")}}]
        ok = await check_receipt(hs, res.receipt, res.transaction_id, trail)
        assert ok.ok and ok.claims is not None and ok.claims["txn"] == res.transaction_id
        tampered = json.loads(res.receipt)
        tampered["path"][-1] = flip(tampered["path"][-1])
        bad = await check_receipt(hs, json.dumps(tampered), res.transaction_id, trail)
        assert not bad.ok and "does not verify" in bad.reason
        other = await check_receipt(hs, res.receipt, out[0].transaction_id, trail)  # type: ignore[union-attr]
        assert not other.ok


async def test_a_proven_batch_with_merkle_receipts(stack: Stack) -> None:
    """Operations above the public tier (one batch proof) and a refused one, in a Merkle
    batch: the refused one has no leaf, the others' receipts verify alone."""
    calls = [(EXCHANGE, RATES[0]), (INVOICES, {"status": None, "limit": 5}),
             (EXCHANGE, {"base": "EUR", "quote": "XXX"}), (EXCHANGE, RATES[1])]  # fmt: skip
    async with agent(stack, "alice", "billing") as hs:
        out = await hs.call_many(calls)
    assert [type(o).__name__ for o in out] == ["CallResult", "CallResult", "TargetError",
                                               "CallResult"]  # fmt: skip
    own = [json.loads(o.receipt) for o in out if isinstance(o, CallResult)]
    assert [r["index"] for r in own] == [0, 1, 2] and len({r["root"] for r in own}) == 1
    assert jwt.decode(own[0]["root"], options={"verify_signature": False})["size"] == 3
    assert [r["leaf"]["tier"] for r in own] == ["public", "internal", "public"]
