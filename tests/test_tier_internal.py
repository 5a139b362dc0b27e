"""Internal tier: proof of possession, attacked over raw NATS."""

from __future__ import annotations

import json
import time
from typing import Any

import jwt

from mcp_handshake.services.store import KeyRegistry
from tests.conftest import AgentKey, Raw, connected

LIST = {"status": None, "limit": 20}  # normalized params of payments.list_invoices


async def _grant(raw: Raw, session: str) -> dict[str, Any]:
    r = await raw.authorize(session, "payments.list_invoices", LIST)
    assert r.error is None and r.body["tier"] == "internal", r.body
    return r.body


async def _refused_and_burnt(raw: Raw, session: str, g: dict[str, Any], proof: str) -> None:
    r = await raw.execute(
        session, g, "payments.list_invoices", LIST, extra_headers={"Handshake-Proof": proof}
    )
    assert r.error == "validation_failed", r.body
    assert r.body["error"]["transaction_id"] == g["transaction_id"]
    again = await raw.execute(session, g, "payments.list_invoices", LIST)  # a good proof now
    assert again.error == "invalid_transaction", "a refused proof must burn the token"


async def test_valid_proof_executes(raw: Raw) -> None:
    alice = raw.session("alice", "billing")
    g = await _grant(raw, alice)
    assert (await raw.execute(alice, g, "payments.list_invoices", LIST)).error is None


async def test_missing_proof(raw: Raw) -> None:
    alice = raw.session("alice", "billing")
    g = await _grant(raw, alice)
    r = await raw.execute(alice, g, "payments.list_invoices", LIST, proof=False)
    assert r.error == "validation_failed"
    assert (await raw.execute(alice, g, "payments.list_invoices", LIST)).error == (
        "invalid_transaction"
    )


async def test_proof_by_another_key(raw: Raw) -> None:
    alice = raw.session("alice", "billing")
    g = await _grant(raw, alice)
    mallory = AgentKey()
    proof = mallory.proof(g["transaction_id"], "payments.list_invoices", g["params_hash"])
    await _refused_and_burnt(raw, alice, g, proof)


async def test_proof_for_other_txn_tool_or_params(raw: Raw) -> None:
    alice = raw.session("alice", "billing")
    key = raw.key("alice")
    for override in (
        {"txn": "00000000-0000-0000-0000-000000000000"},
        {"tool": "payments.create_invoice"},
        {"ph": "sha256:" + "1" * 64},
    ):
        g = await _grant(raw, alice)
        claims = {
            "txn": g["transaction_id"],
            "tool": "payments.list_invoices",
            "ph": g["params_hash"],
            **override,
        }
        await _refused_and_burnt(raw, alice, g, key.proof(**claims))


async def test_stale_or_future_iat(raw: Raw) -> None:
    alice = raw.session("alice", "billing")
    key = raw.key("alice")
    for iat in (int(time.time()) - 120, int(time.time()) + 120):
        g = await _grant(raw, alice)
        proof = key.proof(g["transaction_id"], "payments.list_invoices", g["params_hash"], iat=iat)
        await _refused_and_burnt(raw, alice, g, proof)


async def test_reused_jti(raw: Raw) -> None:
    alice = raw.session("alice", "billing")
    key = raw.key("alice")
    first = await _grant(raw, alice)
    p1 = key.proof(
        first["transaction_id"],
        "payments.list_invoices",
        first["params_hash"],
        jti="reused-jti-0001",
    )
    ok = await raw.execute(
        alice, first, "payments.list_invoices", LIST, extra_headers={"Handshake-Proof": p1}
    )
    assert ok.error is None
    g = await _grant(raw, alice)
    p2 = key.proof(
        g["transaction_id"], "payments.list_invoices", g["params_hash"], jti="reused-jti-0001"
    )
    await _refused_and_burnt(raw, alice, g, p2)


async def test_alg_none_and_hmac_proofs(raw: Raw) -> None:
    alice = raw.session("alice", "billing")
    key = raw.key("alice")
    g = await _grant(raw, alice)
    header = {"typ": "handshake-proof+jwt", "alg": "none", "jwk": key.jwk}
    claims = {
        "txn": g["transaction_id"],
        "tool": "payments.list_invoices",
        "ph": g["params_hash"],
        "iat": int(time.time()),
        "jti": "abcdefgh1234",
    }
    enc = jwt.utils.base64url_encode
    none_proof = (
        enc(json.dumps(header).encode()) + b"." + enc(json.dumps(claims).encode()) + b"."
    ).decode()
    await _refused_and_burnt(raw, alice, g, none_proof)
    g = await _grant(raw, alice)
    claims["txn"] = g["transaction_id"]
    hs = jwt.encode(
        claims,
        key.jwk["x"],
        algorithm="HS256",
        headers={"typ": "handshake-proof+jwt", "jwk": key.jwk},
    )
    await _refused_and_burnt(raw, alice, g, hs)


async def test_wrong_typ(raw: Raw) -> None:
    alice = raw.session("alice", "billing")
    key = raw.key("alice")
    g = await _grant(raw, alice)
    proof = key.proof(
        g["transaction_id"], "payments.list_invoices", g["params_hash"], headers={"typ": "JWT"}
    )
    await _refused_and_burnt(raw, alice, g, proof)


async def test_registered_key_without_cnf(raw: Raw, redis: Any) -> None:
    erin = raw.session("erin", "billing", bind=False)
    key = raw.key("erin")
    burnt = await _grant(raw, erin)
    r = await raw.execute(erin, burnt, "payments.list_invoices", LIST)  # not registered yet
    assert r.error == "validation_failed"
    async with connected(raw.stack, "operator") as op:
        await KeyRegistry(op.nc.jetstream(), create=True).register("erin", key.jwk)
    assert (await raw.execute(erin, burnt, "payments.list_invoices", LIST)).error == (
        "invalid_transaction"
    )
    g = await _grant(raw, erin)
    assert (await raw.execute(erin, g, "payments.list_invoices", LIST)).error is None
    # a key registered for someone else does not help
    frank = raw.session("frank", "billing", bind=False)
    g = await _grant(raw, frank)
    proof = key.proof(g["transaction_id"], "payments.list_invoices", g["params_hash"])
    r = await raw.execute(
        frank, g, "payments.list_invoices", LIST, extra_headers={"Handshake-Proof": proof}
    )
    assert r.error == "validation_failed"
