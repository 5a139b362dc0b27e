"""The gateway's batch routes (``POST /v1/authorize/batch``, ``POST /v1/execute/batch``)
against the real stack, as attacks: each operation keeps every property it has alone,
and a DPoP proof of the batch request is checked as at ``/v1/execute``."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import jwt
import pytest

from mcp_handshake.client._receipts import Receipts
from mcp_handshake.services.core.dpop import GatewayKey
from mcp_handshake.services.dev.devhome import mint_session
from mcp_handshake.services.dev.devstack import Stack
from tests.conftest import AgentKey, Raw, connected
from tests.support.http_agent import (
    SECRETS,
    HttpAgent,
    dpop_proof,
    error_of,
    gateway_url,
    verify_receipt,
)
from tests.test_audit import events
from tests.test_batch import _approve, batch_proof, calls, code
from tests.test_gateway_hardening import _nonces, nonce_stack

__all__ = ["gateway_url", "nonce_stack"]

RATE = {"base": "EUR", "quote": "USD"}
LIST = {"status": None, "limit": 20}
CUSTOMER = {"customer_id": "cus_8f3k2m9q"}
PAYMENT = {"to_account": "acct_4f9d2a", "amount": 2500.0, "currency": "EUR"}  # a human's
EXCHANGE, INVOICES = "payments.get_exchange_rate", "payments.list_invoices"
Call = tuple[str, dict[str, Any]]


@pytest.fixture
async def http(stack: Stack, gateway_url: str) -> AsyncIterator[HttpAgent]:
    async with httpx.AsyncClient(timeout=30) as client:
        yield HttpAgent(client, stack, gateway_url)


def batch_url(http: HttpAgent) -> str:
    return f"{http.base}/v1/execute/batch"


async def post_authorize(http: HttpAgent, session: str, calls: list[Call]) -> httpx.Response:
    body = {"ops": [{"tool": tool, "params": params} for tool, params in calls]}
    r = await http.http.post(f"{http.base}/v1/authorize/batch", json=body,
                             headers={"Authorization": f"DPoP {session}"})  # fmt: skip
    assert r.headers["Cache-Control"] == "no-store", r.headers
    if r.status_code == 200:
        SECRETS.extend(g["token"] for g in r.json()["results"] if "token" in g)
    return r


async def authorize_many(http: HttpAgent, session: str, calls: list[Call]) -> list[Any]:
    r = await post_authorize(http, session, calls)
    assert r.status_code == 200, r.text
    results: list[Any] = r.json()["results"]
    return results


def ops_of(grants: list[Any], calls: list[Call]) -> list[dict[str, Any]]:
    pairs = zip(grants, calls, strict=True)
    return [{"transaction_id": g["transaction_id"], "tool": tool, "params": params,
             "token": g["token"]} for g, (tool, params) in pairs]  # fmt: skip


async def post_execute(
    http: HttpAgent,
    session: str,
    ops: list[dict[str, Any]],
    *,
    dpop: str | bool = True,
    proof: str | None = None,
) -> httpx.Response:
    """``dpop`` True: a fresh DPoP proof of this request by the session's key."""
    headers = {"Authorization": f"DPoP {session}"}
    if dpop is True:
        headers["DPoP"] = dpop_proof(http.key_of(session), "POST", batch_url(http), session)
    elif dpop:
        headers["DPoP"] = dpop
    if proof is not None:
        headers["Handshake-Proof"] = proof
    r = await http.http.post(batch_url(http), json={"ops": ops}, headers=headers)
    assert r.headers["Cache-Control"] == "no-store", r.headers
    leaked = session in r.text or any(op["token"] in r.text for op in ops)
    assert not leaked, "a session or token came back in a response"
    return r


async def execute_many(http: HttpAgent, session: str, ops: list[dict[str, Any]],
                       **kw: Any) -> list[Any]:  # fmt: skip
    r = await post_execute(http, session, ops, **kw)
    assert r.status_code == 200, r.text
    results: list[Any] = r.json()["results"]
    return results


# -- a batch of every tier --------------------------------------------------------


async def test_mixed_batch_each_op_as_alone_with_its_own_receipt(http: HttpAgent, raw: Raw) -> None:
    sub = "gw-batch-mix-" + uuid.uuid4().hex[:6]
    mia = http.session(sub, "billing", "support", "treasury")
    calls = [(EXCHANGE, RATE), (INVOICES, LIST), ("customers.get_customer", CUSTOMER),
             ("payments.send_payment", PAYMENT)]  # fmt: skip
    grants = await authorize_many(http, mia, calls)
    assert [g["tier"] for g in grants] == ["public", "internal", "confidential", "restricted"]
    assert [g["status"] for g in grants] == ["granted"] * 3 + ["pending_approval"]
    ops = ops_of(grants, calls)
    results = await execute_many(http, mia, ops)
    assert [code(r) for r in results] == [None, None, None, "approval_pending"], results
    assert results[3]["error"]["retryable"] is True
    jwks = await http.jwks()
    for g, r in zip(grants[:3], results[:3], strict=True):
        claims = verify_receipt(r["receipt"], jwks)  # each alone, with the JWKS
        assert claims["txn"] == g["transaction_id"] and claims["ph"] == g["params_hash"]
        assert claims["sub"] == sub and claims["tier"] == g["tier"]
    assert results[2]["result"]["card_number"] == "************4242"  # masked as alone
    assert "4242424242424242" not in json.dumps(results)
    await _approve(raw, grants[3]["transaction_id"])  # the pending one, executed later
    later = await execute_many(http, mia, ops[3:])
    assert code(later[0]) is None, later
    claims = verify_receipt(later[0]["receipt"], jwks)
    assert claims["tier"] == "restricted" and [a["by"] for a in claims["approvals"]] == ["victor"]
    again = await execute_many(http, mia, ops)  # every token was used once
    assert [code(r) for r in again] == ["invalid_transaction"] * 4


async def test_a_batch_proof_over_http_refuses_only_what_it_does_not_cover(
    http: HttpAgent,
) -> None:
    """Handshake-Proof (the NATS batch proof) instead of DPoP: an operation it does not
    name is refused if its tier needs a proof (its token used up), the others run."""
    sub = "gw-batch-cover"
    ann = http.session(sub, "billing")
    calls = [(EXCHANGE, RATE)] + [(INVOICES, {"status": s, "limit": 20}) for s in ("paid", "open")]
    grants = await authorize_many(http, ann, calls)
    covered = [(g["transaction_id"], g["params_hash"]) for g in grants[:2]]
    proof = batch_proof(http.key_of(ann), covered)
    results = await execute_many(http, ann, ops_of(grants, calls), dpop=False, proof=proof)
    assert [code(r) for r in results] == [None, None, "validation_failed"], results
    whole = [(g["transaction_id"], g["params_hash"]) for g in grants]
    retry = await execute_many(http, ann, ops_of(grants, calls)[2:], dpop=False,
                               proof=batch_proof(http.key_of(ann), whole))  # fmt: skip
    assert code(retry[0]) == "invalid_transaction"
    both = await post_execute(http, ann, [], proof=proof)  # one proof or the other
    assert both.status_code == 400 and error_of(both) == "bad_request"


# -- tokens ----------------------------------------------------------------------


async def test_another_users_token_is_refused_for_that_op_alone(http: HttpAgent, raw: Raw) -> None:
    alice, bob = http.session("gw-batch-alice", "billing"), http.session("gw-batch-bob", "billing")
    mine = await authorize_many(http, alice, [(INVOICES, LIST)])
    theirs = await authorize_many(http, bob, [(INVOICES, LIST)])
    before = await calls(raw)
    ops = ops_of(mine + theirs, [(INVOICES, LIST)] * 2)
    results = await execute_many(http, alice, ops)
    assert [code(r) for r in results] == [None, "invalid_transaction"], results
    assert await calls(raw) == before + 1
    late = await execute_many(http, bob, ops[1:])  # burnt: its owner cannot use it now
    assert code(late[0]) == "invalid_transaction"


async def test_the_same_token_runs_once_in_one_batch_and_across_batches(
    http: HttpAgent, raw: Raw
) -> None:
    cleo = http.session("gw-batch-twice", "billing")
    grants = await authorize_many(http, cleo, [(INVOICES, LIST)] * 2)
    once, twice = (ops_of([g], [(INVOICES, LIST)]) for g in grants)
    before = await calls(raw)
    # In one batch the copies share the proof: they are refused as its replays.
    results = await execute_many(http, cleo, once * 3)
    assert sorted(str(code(r)) for r in results) == ["None", *["validation_failed"] * 2]
    assert await calls(raw) == before + 1
    concurrent = await asyncio.gather(*(execute_many(http, cleo, twice) for _ in range(4)))
    assert sorted(str(code(r[0])) for r in concurrent) == ["None", *["invalid_transaction"] * 3]
    assert await calls(raw) == before + 2


# -- the DPoP proof of the batch request --------------------------------------------


async def _refused_then_burnt(http: HttpAgent, name: str, proof: Any) -> None:
    """Every operation refused (validation_failed), and its token used up."""
    sess = http.session(f"gw-batch-{name}", "billing")
    calls = [(EXCHANGE, RATE), (INVOICES, LIST)]
    ops = ops_of(await authorize_many(http, sess, calls), calls)
    results = await execute_many(http, sess, ops, dpop=proof(sess, http.key_of(sess)))
    assert [code(r) for r in results] == ["validation_failed"] * 2, (name, results)
    again = await execute_many(http, sess, ops)  # a good proof, too late
    assert [code(r) for r in again] == ["invalid_transaction"] * 2, (name, again)


async def test_a_dpop_proof_for_another_uri_refuses_the_whole_batch(http: HttpAgent) -> None:
    single, url = f"{http.base}/v1/execute", batch_url(http)
    attacks = {
        "single-route": lambda s, k: dpop_proof(k, "POST", single, s),
        "other-host": lambda s, k: dpop_proof(
            k, "POST", "https://evil.example/v1/execute/batch", s
        ),
        "wrong-htm": lambda s, k: dpop_proof(k, "GET", url, s),
        "other-key": lambda s, k: dpop_proof(AgentKey(), "POST", url, s),
        "other-session": lambda s, k: dpop_proof(k, "POST", url, s + "x"),
    }
    for name, attack in attacks.items():
        await _refused_then_burnt(http, name, attack)


async def test_a_replayed_dpop_proof_refuses_the_whole_batch(http: HttpAgent) -> None:
    """The proof's jti is claimed once for the request: replayed with other tokens, every
    operation is refused and its token used up (as a replayed proof at /v1/execute)."""
    dora = http.session("gw-batch-replay", "billing")
    proof = dpop_proof(http.key_of(dora), "POST", batch_url(http), dora)
    first = await authorize_many(http, dora, [(INVOICES, LIST)])
    ok = await execute_many(http, dora, ops_of(first, [(INVOICES, LIST)]), dpop=proof)
    assert code(ok[0]) is None, ok
    calls = [(EXCHANGE, RATE), (INVOICES, LIST)]
    ops = ops_of(await authorize_many(http, dora, calls), calls)
    replay = await execute_many(http, dora, ops, dpop=proof)
    assert [code(r) for r in replay] == ["validation_failed"] * 2, replay
    assert all("jti" in r["error"]["message"] for r in replay)
    again = await execute_many(http, dora, ops)
    assert [code(r) for r in again] == ["invalid_transaction"] * 2
    single = await http.execute(dora, (await http.authorize(dora, INVOICES, LIST)).json(),
                                INVOICES, LIST, dpop=proof)  # fmt: skip
    assert single.status_code == 422 and error_of(single) == "validation_failed"


async def test_not_a_dpop_jws_is_refused_before_anything_is_used(http: HttpAgent) -> None:
    eve = http.session("gw-batch-early", "billing")
    ops = ops_of(await authorize_many(http, eve, [(INVOICES, LIST)]), [(INVOICES, LIST)])
    bad = dpop_proof(http.key_of(eve), "POST", batch_url(http), eve, headers={"typ": "JWT"})
    r = await post_execute(http, eve, ops, dpop=bad)
    assert r.status_code == 422 and error_of(r) == "validation_failed"
    assert code((await execute_many(http, eve, ops))[0]) is None  # the token was not used


async def test_over_nats_a_batch_dpop_proof_needs_the_gateways_word_for_the_batch_uri(
    stack: Stack,
) -> None:
    """An agent naming the URI itself (no tag) is refused; so is the gateway's own
    identity and key vouching for the single execute's URI at the batch subject, or for
    the batch URI at the single execute: each proves only the request it was made for."""
    key = AgentKey()
    session = mint_session(stack.home, "gw-batch-nats", roles=["billing"], jkt=key.thumbprint)
    tagger = GatewayKey.from_file(stack.home / "secrets" / "gateway_key")
    async with connected(stack) as agent, connected(stack, "gateway") as gw:
        for sender, path, tagged, batch in ((agent, "/v1/execute/batch", False, True),
                                            (gw, "/v1/execute", True, True),
                                            (gw, "/v1/execute/batch", True, False)):  # fmt: skip
            url = "https://gw.example" + path
            proof = dpop_proof(key, "POST", url, session)
            headers = {"DPoP": proof, "Handshake-DPoP-Htu": url}
            if tagged:
                headers["Handshake-DPoP-Htu-Tag"] = tagger.tag(url, proof)
            grant = (await agent.authorize(session, INVOICES, LIST)).body
            op = {"transaction_id": grant["transaction_id"], "tool": INVOICES, "params": LIST}
            if batch:
                body = {"ops": [{**op, "token": grant["token"]}]}
                r = await sender.request(sender.s.execute_batch, body, session, headers)
                assert r.error is None, r.body
                assert code(r.body["results"][0]) == "validation_failed", (path, r.body)
            else:
                headers["Handshake-Transaction-Token"] = grant["token"]
                r = await sender.request(sender.s.execute, op, session, headers)
                assert r.error == "validation_failed", r.body


# -- whole-request refusals -----------------------------------------------------------


async def test_over_the_limits_is_413_and_nothing_is_issued_or_used(
    http: HttpAgent, stack: Stack
) -> None:
    sub = "gw-batch-big-" + uuid.uuid4().hex[:6]
    fay = http.session(sub, "billing")
    r = await post_authorize(http, fay, [(EXCHANGE, RATE)] * 257)
    assert r.status_code == 413 and error_of(r) == "payload_too_large", r.text
    padded = {**RATE, "pad": "x" * 70_000}
    r = await post_authorize(http, fay, [(EXCHANGE, padded)])
    assert r.status_code == 413 and error_of(r) == "payload_too_large", r.text
    grants = await authorize_many(http, fay, [(INVOICES, LIST)])
    op = ops_of(grants, [(INVOICES, LIST)])[0]
    fake = {**op, "transaction_id": "x", "token": "fake-" + uuid.uuid4().hex}
    for ops in ([op] + [fake] * 256, [op, {**fake, "params": padded}]):
        r = await post_execute(http, fay, ops)
        assert r.status_code == 413 and error_of(r) == "payload_too_large", r.text
    assert code((await execute_many(http, fay, [op]))[0]) is None  # its token was unused
    for _ in range(50):
        granted = [e for e in events(stack) if e.get("sub") == sub
                   and e["kind"] == "authorize.granted"]  # fmt: skip
        if granted:
            break
        await asyncio.sleep(0.2)
    assert [e["txn"] for e in granted] == [op["transaction_id"]]  # the refused issued none


async def test_forged_or_expired_session_is_401(http: HttpAgent, stack: Stack) -> None:
    gus = http.session("gw-batch-gus", "billing")
    ops = ops_of(await authorize_many(http, gus, [(INVOICES, LIST)]), [(INVOICES, LIST)])
    expired = mint_session(stack.home, "gw-batch-gus", roles=["billing"], ttl_s=-120,
                           jkt=http.key_of(gus).thumbprint)  # fmt: skip
    head, payload, _ = gus.split(".")
    forged = f"{head}.{payload}.{'A' * 86}"
    SECRETS.extend([expired, forged])
    for bad in (expired, forged):
        r = await post_execute(http, bad, ops)
        assert r.status_code == 401 and error_of(r) == "unauthenticated", r.text
        assert "DPoP" in r.headers["WWW-Authenticate"]
        r = await post_authorize(http, bad, [(INVOICES, LIST)])
        assert r.status_code == 401 and error_of(r) == "unauthenticated", r.text
    assert code((await execute_many(http, gus, ops))[0]) is None  # nothing was used


# -- DPoP server nonces -------------------------------------------------------------


async def test_without_a_live_nonce_the_batch_is_refused_whole_and_nothing_used(
    nonce_stack: Stack,
) -> None:
    """401 use_dpop_nonce with a fresh nonce, every token unused; the retry with it runs."""
    async with httpx.AsyncClient(timeout=30) as client:
        http = HttpAgent(client, nonce_stack, nonce_stack.gateway_url)
        hana = http.session("gw-batch-nonce", "billing")
        calls = [(EXCHANGE, RATE), (INVOICES, LIST)]
        ops = ops_of(await authorize_many(http, hana, calls), calls)
        key, url = http.key_of(hana), batch_url(http)
        nonce = ""
        for bad in (None, "123.forged"):
            r = await post_execute(http, hana, ops, dpop=dpop_proof(key, "POST", url, hana,
                                                                    nonce=bad))  # fmt: skip
            assert r.status_code == 401 and error_of(r) == "use_dpop_nonce", r.text
            assert r.headers["WWW-Authenticate"] == 'DPoP error="use_dpop_nonce"'
            nonce = r.headers["DPoP-Nonce"]
        proof = dpop_proof(key, "POST", url, hana, nonce=nonce)
        r = await post_execute(http, hana, ops, dpop=proof)
        assert r.status_code == 200 and [code(x) for x in r.json()["results"]] == [None, None]
        assert _nonces(nonce_stack).valid(r.headers["DPoP-Nonce"])


async def test_a_missing_nonce_cannot_bypass_the_gateway_for_a_batch(nonce_stack: Stack) -> None:
    """The gateway's own identity and key, straight to execute.batch without a nonce:
    every operation refused by the execute worker."""
    key = AgentKey()
    session = mint_session(nonce_stack.home, "gw-batch-nonce-nats", roles=["billing"],
                           jkt=key.thumbprint)  # fmt: skip
    tagger = GatewayKey.from_file(nonce_stack.home / "secrets" / "gateway_key")
    url = f"{nonce_stack.gateway_url}/v1/execute/batch"
    async with connected(nonce_stack) as agent, connected(nonce_stack, "gateway") as gw:
        outcomes = []
        for nonce in (None, _nonces(nonce_stack).issue()):
            grant = (await agent.authorize(session, INVOICES, LIST)).body
            op = {"transaction_id": grant["transaction_id"], "tool": INVOICES, "params": LIST,
                  "token": grant["token"]}  # fmt: skip
            proof = dpop_proof(key, "POST", url, session, nonce=nonce)
            headers = {"DPoP": proof, "Handshake-DPoP-Htu": url,
                       "Handshake-DPoP-Htu-Tag": tagger.tag(url, proof)}  # fmt: skip
            r = await gw.request(gw.s.execute_batch, {"ops": [op]}, session, headers)
            assert r.error is None, r.body
            outcomes.append(r.body["results"][0])
    assert code(outcomes[0]) == "validation_failed"
    assert outcomes[0]["error"]["message"] == "DPoP proof without a live server nonce"
    assert code(outcomes[1]) is None, outcomes


async def test_merkle_receipts_pass_through_the_gateway(http: HttpAgent) -> None:
    """``"receipts": "merkle"`` reaches the workers with the body; the one signed root
    and each operation's inclusion come back, each verifiable with the JWKS alone."""
    sub = "gw-batch-merkle-" + uuid.uuid4().hex[:6]
    mia = http.session(sub, "billing")
    calls = [(EXCHANGE, RATE), (INVOICES, LIST), (EXCHANGE, {"base": "EUR", "quote": "GBP"})]
    ops = ops_of(await authorize_many(http, mia, calls), calls)
    headers = {"Authorization": f"DPoP {mia}",
               "DPoP": dpop_proof(http.key_of(mia), "POST", batch_url(http), mia)}  # fmt: skip
    body = {"ops": ops, "receipts": "merkle"}
    r = await http.http.post(batch_url(http), json=body, headers=headers)
    assert r.status_code == 200, r.text
    reply = r.json()
    assert [code(x) for x in reply["results"]] == [None] * 3
    jwks = {k["kid"]: jwt.PyJWK(k) for k in (await http.jwks())["keys"]}
    receipts = Receipts(lambda _refresh: _const(jwks))
    for i, (op, x) in enumerate(zip(ops, reply["results"], strict=True)):
        assert "receipt" not in x and x["inclusion"]["index"] == i
        own = {"root": reply["batch_receipt"], **x["inclusion"]}
        expected = {"txn": op["transaction_id"], "tool": op["tool"], "ph": x["params_hash"]}
        claims = await receipts.verify(json.dumps(own), expected, x["result"])
        assert claims["sub"] == sub


async def _const(value: Any) -> Any:
    return value
