"""The Python client against the real stack: both phases, receipts, errors, sessions."""

from __future__ import annotations

import json
from pathlib import Path

import jwt
import pytest

from mcp_handshake.client import (
    CallableSession,
    ProofKey,
    FileSession,
    Forbidden,
    HandshakeClient,
    InvalidParams,
    InvalidTransaction,
    UnknownTool,
    ValidationFailed,
)
from mcp_handshake.services.devhome import mint_session
from mcp_handshake.services.devstack import Stack
from mcp_handshake.shared.hashing import canonical_json, sha256_tagged
from mcp_handshake.shared.keys import generate_private_key

RATE = {"base": "EUR", "quote": "USD"}


def agent(stack: Stack, sub: str, *roles: str, **kw: object) -> HandshakeClient:
    """A client for ``sub`` with its own proof key, its session bound to that key."""
    key = ProofKey(generate_private_key())
    token = mint_session(stack.home, sub, roles=list(roles), jkt=key.thumbprint)
    return HandshakeClient(stack.nats_url or "", session=token, proof_key=key, **kw)  # type: ignore[arg-type]


async def test_call_returns_result_with_verified_receipt(stack: Stack) -> None:
    async with agent(stack, "alice", "billing") as hs:
        res = await hs.call("payments.get_exchange_rate", RATE)
        assert res.result["base"] == "EUR" and res.result["rate"] > 0
        c = res.claims
        assert c["sub"] == "alice" and c["tool"] == "payments.get_exchange_rate"
        assert c["tier"] == "public" and c["txn"] == res.transaction_id
        assert c["rh"] == sha256_tagged(canonical_json(res.result))
        assert c["iss"] == "mcp-handshake-dev" and c["approvals"] == []
        assert c["auth_at"] <= c["iat"]
        header = jwt.get_unverified_header(res.receipt)
        assert header["typ"] == "handshake-receipt+jwt" and header["alg"] == "EdDSA"


async def test_receipt_verifies_offline_with_the_jwks(stack: Stack) -> None:
    async with agent(stack, "alice", "billing") as hs:
        res = await hs.call("payments.list_invoices", {"limit": 1})
        keys = await hs.keys()
    kid = jwt.get_unverified_header(res.receipt)["kid"]
    claims = jwt.decode(res.receipt, keys[kid].key, algorithms=["EdDSA"])
    assert claims["txn"] == res.transaction_id


async def test_tampered_result_or_receipt_is_detected(stack: Stack) -> None:
    async with agent(stack, "alice", "billing") as hs:
        grant = await hs.authorize("payments.get_exchange_rate", RATE)
        res = await hs.execute(grant, "payments.get_exchange_rate", RATE)
        with pytest.raises(InvalidTransaction):
            await hs.verify_receipt(res.receipt, {**res.result, "rate": 99}, grant,
                                    "payments.get_exchange_rate")  # fmt: skip
        head, body, sig = res.receipt.split(".")
        forged = f"{head}.{body}.{sig[:-4]}AAAA"
        with pytest.raises(ValidationFailed):
            await hs.verify_receipt(forged, res.result, grant, "payments.get_exchange_rate")


async def test_errors_are_typed(stack: Stack) -> None:
    async with agent(stack, "alice", "billing") as hs:
        with pytest.raises(UnknownTool):
            await hs.call("nope.nothing", {})
        with pytest.raises(Forbidden):
            await hs.call("payments.send_payment", {})
        with pytest.raises(InvalidParams) as info:
            await hs.call("payments.get_exchange_rate", {"base": "x"})
        assert info.value.status == 422 and not info.value.retryable


async def test_tools_lists_schemas(stack: Stack) -> None:
    async with agent(stack, "dan", "analyst") as hs:
        tools = {t.name: t for t in await hs.tools()}
    assert "reports.run_query" in tools and "payments.list_invoices" not in tools
    schema = tools["reports.run_query"].params_schema
    assert schema["required"] == ["expression"]


async def test_session_providers_refresh(stack: Stack, tmp_path: Path) -> None:
    path = tmp_path / "session.jwt"
    path.write_text(mint_session(stack.home, "alice", roles=["billing"], ttl_s=20))
    async with HandshakeClient(stack.nats_url or "", session=FileSession(path)) as hs:
        assert (await hs.call("payments.get_exchange_rate", RATE)).claims["sub"] == "alice"
    calls = []

    def provider() -> str:
        calls.append(1)
        return mint_session(stack.home, "bob", roles=["billing"], ttl_s=20)

    # ttl 20 s is inside the 30 s refresh margin: every use fetches a fresh token
    async with HandshakeClient(stack.nats_url or "", session=CallableSession(provider)) as hs:
        await hs.call("payments.get_exchange_rate", RATE)
        await hs.call("payments.get_exchange_rate", RATE)
    assert len(calls) >= 2


def test_public_api_is_pinned() -> None:
    import mcp_handshake.client as client

    assert sorted(client.__all__) == sorted(
        json.loads("""[
        "ApprovalDenied", "ApprovalPending", "BadRequest", "CallResult", "CallableSession",
        "CommandSession", "EnvSession", "FileSession", "Forbidden", "Grant", "HandshakeClient",
        "HandshakeError", "InternalError", "InvalidParams", "InvalidTransaction",
        "OutcomeUnknown", "PayloadTooLarge", "PendingCall", "ProofKey", "RateLimited",
        "SessionProvider", "StaticSession", "StatusReply", "TargetError", "ToolInfo",
        "Unauthenticated", "Unavailable", "UnknownTool", "ValidationFailed"]""")
    )
    for name in client.__all__:
        assert hasattr(client, name)
