"""The Python client against the real stack: both phases, receipts, errors, sessions."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest

from mcp_handshake.client import (
    ApprovalDenied,
    CallableSession,
    CallResult,
    FileSession,
    Forbidden,
    HandshakeClient,
    HandshakeError,
    InvalidParams,
    InvalidTransaction,
    ProofKey,
    UnknownTool,
    ValidationFailed,
)
from mcp_handshake.services.dev.devhome import mint_session
from mcp_handshake.services.dev.devstack import Stack
from mcp_handshake.shared.hashing import canonical_json, sha256_tagged
from mcp_handshake.shared.keys import generate_private_key

RATE = {"base": "EUR", "quote": "USD"}


def agent(stack: Stack, sub: str, *roles: str, **kw: object) -> HandshakeClient:
    """A client for ``sub`` with its own proof key, its session bound to that key."""
    key = ProofKey(generate_private_key())
    token = mint_session(stack.home, sub, roles=list(roles), jkt=key.thumbprint)
    kw.setdefault("connect_options", stack.agent_options())
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
            await hs.verify_receipt(
                res.receipt, {**res.result, "rate": 99}, grant, "payments.get_exchange_rate"
            )
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
    async with HandshakeClient(
        stack.nats_url or "", session=FileSession(path), connect_options=stack.agent_options()
    ) as hs:
        assert (await hs.call("payments.get_exchange_rate", RATE)).claims["sub"] == "alice"
    calls = []

    def provider() -> str:
        calls.append(1)
        return mint_session(stack.home, "bob", roles=["billing"], ttl_s=20)

    # ttl 20 s is inside the 30 s refresh margin: every use fetches a fresh token
    async with HandshakeClient(
        stack.nats_url or "",
        session=CallableSession(provider),
        connect_options=stack.agent_options(),
    ) as hs:
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
        "SessionProvider", "StaticSession", "StatusReply", "SyncHandshakeClient", "TargetError",
        "ToolInfo", "Unauthenticated", "Unavailable", "UnknownTool", "ValidationFailed"]""")
    )
    for name in client.__all__:
        assert hasattr(client, name)


async def test_call_waits_for_approval_transparently(stack: Stack) -> None:
    async with agent(stack, "tess-w", "treasury") as hs:
        res = await hs.call(
            "payments.send_payment", {"to_account": "acct_4f9d2a", "amount": 5, "currency": "EUR"}
        )
    assert res.claims["approvals"][0]["by"] == "confirmation-agent"


async def test_batch_submit_and_collect_as_decisions_arrive(stack: Stack) -> None:
    def pay(amount: float, to: str = "acct_4f9d2a") -> dict[str, object]:
        return {"to_account": to, "amount": amount, "currency": "EUR"}

    victor = HandshakeClient(
        stack.nats_url or "",
        session=mint_session(stack.home, "victor", roles=["approver"]),
        connect_options=stack.agent_options(),
    )
    async with agent(stack, "tess-batch", "treasury", approval_timeout_s=20) as hs, victor:
        pendings = [
            await hs.submit("payments.send_payment", p)
            for p in (pay(1), pay(2), pay(3), pay(90_000), pay(700, "acct_stranger"))
        ]
        human = pendings[-1]

        async def approver() -> None:
            for _ in range(50):
                waiting = {a.transaction_id for a in await victor.approvals()}
                if human.transaction_id in waiting:
                    await victor.decide(human.transaction_id, "approve", "known supplier")
                    return
                await asyncio.sleep(0.1)

        task = asyncio.create_task(approver())
        outcomes = {p.transaction_id: r async for p, r in hs.as_completed(pendings)}
        await task
    assert isinstance(outcomes[pendings[3].transaction_id], ApprovalDenied)
    for p in (*pendings[:3], human):
        assert isinstance(outcomes[p.transaction_id], CallResult), outcomes[p.transaction_id]
    human_result = outcomes[human.transaction_id]
    assert isinstance(human_result, CallResult)
    assert human_result.claims["approvals"][0]["by"] == "victor"


async def test_call_many_keeps_order_and_returns_errors(stack: Stack) -> None:
    async with agent(stack, "alice", "billing") as hs:
        calls = [("payments.get_exchange_rate", RATE)] * 5 + [("nope.nothing", {})]
        results = await hs.call_many(calls, concurrency=3)
    assert all(isinstance(r, CallResult) for r in results[:5])
    assert isinstance(results[5], UnknownTool)


async def test_cli_approves_a_pending_payment(stack: Stack) -> None:
    async with agent(stack, "tess-cli", "treasury") as hs:
        pending = await hs.submit(
            "payments.send_payment",
            {"to_account": "acct_4f9d2a", "amount": 1500, "currency": "EUR"},
        )
        env = {
            **os.environ,
            **stack.env(),
            "HANDSHAKE_SESSION": mint_session(stack.home, "victor", roles=["approver"]),
        }
        for _ in range(30):  # the confirmation agent passes it on first
            if (await hs.status(pending.transaction_id)).status == "pending_approval":
                listed = await asyncio.create_subprocess_exec(
                    sys.executable,
                    "-m",
                    "mcp_handshake.services.dev.cli",
                    "approvals",
                    "list",
                    env=env,
                    stdout=asyncio.subprocess.PIPE,
                )
                out, _ = await listed.communicate()
                if pending.transaction_id in out.decode():
                    break
            await asyncio.sleep(0.1)
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "mcp_handshake.services.dev.cli",
            "approvals",
            "approve",
            pending.transaction_id,
            "--reason",
            "invoice checked",
            env=env,
            stdout=asyncio.subprocess.PIPE,
        )
        out, _ = await proc.communicate()
        assert proc.returncode == 0 and "approved" in out.decode()
        res = await hs.wait(pending)
    assert res.claims["approvals"][0]["by"] == "victor"


async def test_client_from_env_like_the_cli(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in stack.env().items():
        if key.startswith("HANDSHAKE_"):
            monkeypatch.setenv(key, value)
    from mcp_handshake.shared.keys import load_or_create_private_key as load_key
    from mcp_handshake.shared.keys import public_jwk
    from mcp_handshake.shared.settings import Settings

    agent_key = Settings.from_env().agent_key  # a temporary XDG_CONFIG_HOME (conftest)
    assert agent_key is not None and not agent_key.is_relative_to(stack.home)
    thumb = public_jwk(load_key(agent_key))["kid"]
    monkeypatch.setenv(
        "HANDSHAKE_SESSION", mint_session(stack.home, "env-alice", roles=["billing"], jkt=thumb)
    )
    async with HandshakeClient.from_env() as hs:
        res = await hs.call("payments.list_invoices", {"limit": 1})  # internal: proof by agent.pem
    assert res.claims["sub"] == "env-alice"


async def test_stream_runs_lazily_with_bounded_concurrency(stack: Stack) -> None:
    """stream() pulls calls only as slots free up, and yields each outcome as it lands."""
    pulled = 0
    in_flight_max = 0

    def calls() -> Iterator[tuple[str, dict[str, Any]]]:
        nonlocal pulled
        for i in range(40):
            pulled += 1
            if i == 7:  # one bad call: its error comes back in place
                yield "payments.get_exchange_rate", {"base": "EUR"}
            else:
                yield "payments.get_exchange_rate", RATE

    seen: dict[int, Any] = {}
    async with agent(stack, "alice", "billing") as hs:
        async for index, outcome in hs.stream(calls(), concurrency=4):
            in_flight_max = max(in_flight_max, pulled - len(seen))
            seen[index] = outcome
    assert sorted(seen) == list(range(40))
    assert in_flight_max <= 5  # at most `concurrency` pulled ahead of what was yielded
    assert isinstance(seen[7], HandshakeError) and seen[7].code == "invalid_params"
    assert all(isinstance(o, CallResult) for i, o in seen.items() if i != 7)


async def test_stream_takes_async_iterables_and_stops_early(stack: Stack) -> None:
    async def calls() -> AsyncIterator[tuple[str, dict[str, Any]]]:
        for _ in range(1000):
            yield "payments.get_exchange_rate", RATE

    got = 0
    async with agent(stack, "alice", "billing") as hs:
        async for _, outcome in hs.stream(calls(), concurrency=8):
            assert isinstance(outcome, CallResult)
            got += 1
            if got == 10:
                break
        assert (await hs.call("payments.get_exchange_rate", RATE)).result["base"] == "EUR"
    assert got == 10


async def test_no_nats_server_is_unavailable_within_seconds() -> None:
    """Nothing listens at the URL: ``Unavailable`` at once (nats-py alone retries a
    refused server for minutes inside connect), with the URL's password redacted."""
    with socket.socket() as probe:  # free a moment ago: nothing listens there now
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    started = time.monotonic()
    client = HandshakeClient(f"nats://agent:s3cret-pw@127.0.0.1:{port}", session="x")
    with pytest.raises(HandshakeError) as caught:
        await client.connect()
    assert caught.value.code == "unavailable"
    assert f"127.0.0.1:{port}" in str(caught.value) and "s3cret-pw" not in str(caught.value)
    assert time.monotonic() - started < 10


async def test_a_refused_nats_identity_is_unauthenticated(stack: Stack) -> None:
    options = {**stack.agent_options(), "password": "not-the-password"}
    client = HandshakeClient(stack.nats_url or "", session="x", connect_options=options)
    with pytest.raises(HandshakeError) as caught:
        await client.connect()
    assert caught.value.code == "unauthenticated"
    assert "not-the-password" not in str(caught.value)


async def test_connected_client_keeps_nats_py_reconnects(stack: Stack) -> None:
    """The quick first connection does not shorten reconnects once connected."""
    async with agent(stack, "alice", "billing") as hs:
        assert hs._nc is not None
        assert hs._nc.options["max_reconnect_attempts"] == 60
