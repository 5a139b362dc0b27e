"""The gateway's ``/mcp`` as an OAuth 2.1 protected resource, against the real stack.

Attacks first (plain HTTP, no MCP client): no token, a token for another audience, a
forged or expired one, a foreign ``Host`` or ``Origin``. Then the official MCP SDK's
client, on both eras (2026-07-28 ``server/discover`` and 2025-11-25 ``initialize``):
discovery from the 401, a public call with the bearer session, an internal call with
a DPoP proof (and the refusal without one), a restricted call approved while it waits.
Pending calls are keyed by user: another user can neither wait on nor see them.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Generator
from typing import Any

import httpx
import httpx2
import jwt
import msgspec
import nats
import pytest
from mcp import ClientSession
from mcp.client.auth.utils import extract_resource_metadata_from_www_auth
from mcp.client.streamable_http import streamable_http_client
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from mcp_handshake.services.core.config import load_config
from mcp_handshake.services.core.dpop import GatewayKey
from mcp_handshake.services.core.sessions import SessionVerifier
from mcp_handshake.services.dev.devhome import mint_session
from mcp_handshake.services.dev.devstack import Stack
from mcp_handshake.services.gateway.forward import Gateway, GatewayOptions
from mcp_handshake.services.gateway.mcp_auth import CALLER_KEY, McpCaller, McpGuard, McpResource
from mcp_handshake.services.gateway.mcp_calls import GatewayCalls
from mcp_handshake.services.gateway.nonce import NonceIssuer
from mcp_handshake.shared.subjects import Subjects
from tests.conftest import AgentKey
from tests.support.http_agent import dpop_proof, gateway_url
from tests.test_mcp_server import approve, error_code, receipt_claims, text

__all__ = ["gateway_url"]

RATE = {"base": "EUR", "quote": "USD"}
INIT = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": "2025-11-25", "capabilities": {},
                   "clientInfo": {"name": "curl", "version": "1"}}}  # fmt: skip
JSON_HEADERS = {"Accept": "application/json, text/event-stream",
                "Content-Type": "application/json"}  # fmt: skip


def bearer(token: str) -> dict[str, str]:
    return {**JSON_HEADERS, "Authorization": f"Bearer {token}"}


class DPoPAuth(httpx2.Auth):
    """The session as ``DPoP <jwt>`` and a fresh DPoP proof (RFC 9449) on every request."""

    def __init__(self, key: AgentKey, session: str) -> None:
        self.key, self.session = key, session

    def auth_flow(self, request: httpx2.Request) -> Generator[httpx2.Request, Any, None]:
        htu = str(request.url).split("?")[0]
        request.headers["Authorization"] = f"DPoP {self.session}"
        request.headers["DPoP"] = dpop_proof(self.key, request.method, htu, self.session)
        yield request


@contextlib.asynccontextmanager
async def mcp_client(
    url: str, auth: httpx2.Auth | None = None, headers: dict[str, str] | None = None,
    modern: bool = True,
) -> AsyncIterator[ClientSession]:  # fmt: skip
    async with (
        httpx2.AsyncClient(auth=auth, headers=headers, timeout=60) as http,
        streamable_http_client(f"{url}/mcp", http_client=http) as (read, write),
        ClientSession(read, write) as session,
    ):
        await (session.discover() if modern else session.initialize())
        yield session


#: Every session this module used: none may reach a gateway's log.
USED: list[str] = []


def session_for(stack: Stack, sub: str, *roles: str, key: AgentKey | None = None,
                **kw: Any) -> str:  # fmt: skip
    token = mint_session(stack.home, sub, roles=list(roles),
                         jkt=key.thumbprint if key else None, **kw)  # fmt: skip
    USED.append(token)
    return token


async def test_no_token_is_a_401_with_the_resource_metadata(stack: Stack, gateway_url: str) -> None:
    async with httpx.AsyncClient() as http:
        refused = await http.post(f"{gateway_url}/mcp", json=INIT, headers=JSON_HEADERS)
        assert refused.status_code == 401
        challenge = refused.headers["www-authenticate"]
        meta_url = f"{gateway_url}/.well-known/oauth-protected-resource/mcp"
        assert challenge.startswith("Bearer ") and f'resource_metadata="{meta_url}"' in challenge
        # No server-initiated stream to hold a connection open: POST only.
        assert (await http.get(f"{gateway_url}/mcp")).status_code == 405
        for url in (meta_url, f"{gateway_url}/.well-known/oauth-protected-resource"):
            doc = (await http.get(url)).json()
            issuer = load_config(stack.home / "handshake.toml").session.issuer
            assert doc["resource"] == f"{gateway_url}/mcp"
            assert doc["authorization_servers"] == [issuer]


@pytest.mark.parametrize("case", ["other_audience", "expired", "forged", "not_a_jwt"])
async def test_bad_sessions_are_refused(stack: Stack, gateway_url: str, case: str) -> None:
    token = {
        "other_audience": lambda: session_for(stack, "eve", "billing",
                                              extra={"aud": "https://other.example/mcp"}),
        "expired": lambda: session_for(stack, "eve", "billing", ttl_s=-60),
        "forged": lambda: jwt.encode({"sub": "eve", "aud": "mcp-handshake", "iss": "x",
                                      "exp": time.time() + 60, "iat": time.time()},
                                     AgentKey().private, algorithm="EdDSA"),
        "not_a_jwt": lambda: "hello",
    }[case]()  # fmt: skip
    async with httpx.AsyncClient() as http:
        refused = await http.post(f"{gateway_url}/mcp", json=INIT,
                                  headers=bearer(token))  # fmt: skip
    assert refused.status_code == 401
    assert 'error="invalid_token"' in refused.headers["www-authenticate"]
    assert "resource_metadata=" in refused.headers["www-authenticate"]
    assert token not in refused.text


@pytest.mark.parametrize(
    ("header", "value", "status"),
    [("Host", "evil.example", 421), ("Host", "127.0.0.1.evil.example:80", 421),
     ("Origin", "https://evil.example", 403), ("Origin", "http://127.0.0.1.evil.example", 403)],
)  # fmt: skip
async def test_foreign_host_or_origin_is_refused(
    stack: Stack, gateway_url: str, header: str, value: str, status: int
) -> None:
    token = session_for(stack, "ann", "billing")
    headers = {**JSON_HEADERS, "Authorization": f"Bearer {token}", header: value}
    async with httpx.AsyncClient() as http:
        refused = await http.post(f"{gateway_url}/mcp", json=INIT, headers=headers)
        assert refused.status_code == status
        ok = await http.post(f"{gateway_url}/mcp", json=INIT,
                             headers={**JSON_HEADERS, "Authorization": f"Bearer {token}",
                                      "Origin": gateway_url})  # fmt: skip
        assert ok.status_code == 200, ok.text
        assert ok.headers["cache-control"] == "no-store"


@pytest.mark.parametrize("modern", [True, False], ids=["2026-07-28", "2025-11-25"])
async def test_sdk_client_discovers_then_calls_public_and_internal(
    stack: Stack, gateway_url: str, modern: bool
) -> None:
    async with httpx2.AsyncClient() as http:  # what the SDK's OAuth flow reads first
        first = await http.post(f"{gateway_url}/mcp", json=INIT, headers=JSON_HEADERS)
    meta_url = extract_resource_metadata_from_www_auth(first)
    assert meta_url == f"{gateway_url}/.well-known/oauth-protected-resource/mcp"

    key = AgentKey()
    token = session_for(stack, "mcp-gw-ann", "billing", "support", key=key)
    plain = session_for(stack, "mcp-gw-ann", "billing", "support")  # no key: a bearer token
    async with mcp_client(gateway_url, headers={"Authorization": f"Bearer {plain}"},
                          modern=modern) as mcp:  # fmt: skip
        listed = {t.name: t for t in (await mcp.list_tools()).tools}
        assert {"payments__get_exchange_rate", "payments__list_invoices",
                "handshake_wait"} <= set(listed)  # fmt: skip
        public = await mcp.call_tool("payments__get_exchange_rate", RATE)
        assert receipt_claims(public)["sub"] == "mcp-gw-ann"
        refused = await mcp.call_tool("payments__list_invoices", {"limit": 1})
        assert error_code(refused) == "validation_failed" and "DPoP" in text(refused)

    async with mcp_client(gateway_url, DPoPAuth(key, token), modern=modern) as mcp:
        public = await mcp.call_tool("payments__get_exchange_rate", RATE)
        assert receipt_claims(public)["tier"] == "public"
        internal = await mcp.call_tool("payments__list_invoices", {"limit": 1})
        claims = receipt_claims(internal)
        assert claims["tier"] == "internal" and claims["sub"] == "mcp-gw-ann"


@pytest.mark.parametrize("scheme", ["Bearer", "DPoP"])
async def test_a_bound_session_without_its_proof_is_refused(
    stack: Stack, gateway_url: str, scheme: str
) -> None:
    """RFC 9449 section 7.2: a DPoP-bound session (cnf.jkt) is no bearer token, not even
    for public tools: without a proof of its key, or with a proof of another key, 401."""
    key = AgentKey()
    token = session_for(stack, "mcp-gw-stolen", "billing", key=key)
    rate = {"jsonrpc": "2.0", "id": 2, "method": "tools/call",
            "params": {"name": "payments__get_exchange_rate", "arguments": RATE}}  # fmt: skip
    url = f"{gateway_url}/mcp"
    headers = {**JSON_HEADERS, "Authorization": f"{scheme} {token}"}
    async with httpx.AsyncClient() as http:
        for body in (INIT, rate):
            refused = await http.post(url, json=body, headers=headers)
            assert refused.status_code == 401, refused.text
            challenge = refused.headers["www-authenticate"]
            assert challenge.startswith('DPoP error="invalid_token"') and token not in refused.text
        thief = dpop_proof(AgentKey(), "POST", url, token)
        refused = await http.post(url, json=INIT, headers={**headers, "DPoP": thief})
        assert refused.status_code == 401 and refused.json()["error"] == "invalid_dpop_proof"
        other_uri = dpop_proof(key, "POST", "https://phish.example/mcp", token)
        refused = await http.post(url, json=INIT, headers={**headers, "DPoP": other_uri})
        assert refused.status_code == 401 and refused.json()["error"] == "invalid_dpop_proof"
        own = dpop_proof(key, "POST", url, token)
        ok = await http.post(url, json=INIT, headers={**headers, "DPoP": own})
        assert ok.status_code == 200, ok.text


async def test_restricted_call_waits_with_progress_until_approved(
    stack: Stack, gateway_url: str
) -> None:
    key = AgentKey()
    token = session_for(stack, "mcp-gw-tess", "treasury", key=key)
    progress: list[str] = []
    reported = asyncio.Event()

    async def on_progress(done: float, total: float | None, message: str | None) -> None:
        progress.append(message or "")
        reported.set()

    large = {"to_account": "acct_4f9d2a", "amount": 500, "currency": "EUR"}  # a human decides
    async with mcp_client(gateway_url, DPoPAuth(key, token)) as mcp:
        call = asyncio.create_task(
            mcp.call_tool("payments__send_payment", large, progress_callback=on_progress)
        )
        await asyncio.wait_for(reported.wait(), 15)
        txn = progress[0].rsplit("(", 1)[1].rstrip(")")
        await asyncio.to_thread(approve, stack, txn)
        done = await asyncio.wait_for(call, 40)
    claims = receipt_claims(done)
    assert claims["txn"] == txn and claims["approvals"][0]["by"] == "victor"


def _who(verifier: SessionVerifier, token: str, key: AgentKey, htu: str) -> McpCaller:
    return McpCaller(verifier.verify(f"Bearer {token}"), token,
                     dpop_proof(key, "POST", htu, token), htu)  # fmt: skip


async def test_pending_calls_belong_to_their_user(stack: Stack) -> None:
    """A restricted call left pending: another session of the same user finishes it with
    handshake_wait; another user can neither wait on it nor see it."""
    cfg = load_config(stack.home / "handshake.toml")
    verifier = await SessionVerifier.create(cfg.session, cfg.path.parent)
    nc = await nats.connect(**stack.connect_options("gateway"))
    htu = "http://gw.test/mcp"
    try:
        key = GatewayKey.from_file(stack.home / "secrets" / "gateway_key")
        options = GatewayOptions(gateway_key=key)
        calls = GatewayCalls(Gateway(nc, Subjects(), options), wait_bound_s=0.5)
        tess, mallory = AgentKey(), AgentKey()
        t1 = session_for(stack, "mcp-gw-tom", "treasury", key=tess)
        params = {"to_account": "acct_4f9d2a", "amount": 650, "currency": "EUR"}
        pending = await calls.call(_who(verifier, t1, tess, htu), "payments__send_payment",
                                   params, _no_progress)  # fmt: skip
        assert pending.structured_content["status"] == "pending_approval", text(pending)
        txn = pending.structured_content["transaction_id"]

        other = session_for(stack, "mcp-gw-mallory", "treasury", key=mallory)
        stolen = await calls.call(_who(verifier, other, mallory, htu), "handshake_wait",
                                  {"transaction_id": txn}, _no_progress)  # fmt: skip
        assert error_code(stolen) == "invalid_transaction"
        peek = await calls.call(_who(verifier, other, mallory, htu), "handshake_status",
                                {"transaction_id": txn}, _no_progress)  # fmt: skip
        assert error_code(peek) == "invalid_transaction" and "pending" not in text(peek)

        await asyncio.to_thread(approve, stack, txn)
        t2 = session_for(stack, "mcp-gw-tom", "treasury", key=tess)  # a new session
        done = await calls.call(_who(verifier, t2, tess, htu), "handshake_wait",
                                {"transaction_id": txn}, _no_progress)  # fmt: skip
        assert receipt_claims(done)["txn"] == txn
    finally:
        await nc.close()


async def _no_progress(done: float, total: float | None, message: str | None) -> None:
    pass


async def test_oversized_arguments_are_payload_too_large(stack: Stack, gateway_url: str) -> None:
    """1.2 MB of arguments: refused as too large, never ``unavailable``."""
    token = session_for(stack, "ann", "billing")
    big = {"base": "E" * 1_200_000, "quote": "USD"}
    call = {"jsonrpc": "2.0", "id": 2, "method": "tools/call",
            "params": {"name": "payments__get_exchange_rate", "arguments": big}}  # fmt: skip
    async with httpx.AsyncClient() as http:
        refused = await http.post(f"{gateway_url}/mcp", json=call,
                                  headers=bearer(token))  # fmt: skip
    assert refused.status_code == 413

    nc = await nats.connect(**stack.connect_options("gateway"))
    try:
        calls = GatewayCalls(Gateway(nc, Subjects(), GatewayOptions()))
        cfg = load_config(stack.home / "handshake.toml")
        verifier = await SessionVerifier.create(cfg.session, cfg.path.parent)
        who = McpCaller(verifier.verify(f"Bearer {token}"), token, None, "http://gw.test/mcp")
        result = await calls.call(who, "payments__get_exchange_rate", big, _no_progress)
        assert error_code(result) == "payload_too_large"
    finally:
        await nc.close()


async def _guarded(
    stack: Stack, nonces: NonceIssuer | None = None, **session_cfg: Any
) -> httpx.AsyncClient:
    """The guard alone, in process, with the stack's real session keys and ``session_cfg``
    over its ``[session]``; behind it, an app that answers 200 with the caller's sub."""
    cfg = load_config(stack.home / "handshake.toml")
    session = msgspec.structs.replace(cfg.session, **session_cfg)
    verifier = await SessionVerifier.create(session, cfg.path.parent)

    async def inner(scope: Scope, receive: Receive, send: Send) -> None:
        who = scope[CALLER_KEY]
        await Response(who.sub, 200)(scope, receive, send)

    resource = McpResource.at("https://gw.test", session.issuer, (),
                              tuple(session.mcp_scopes))  # fmt: skip
    guard = McpGuard(inner, resource, verifier, nonces, gateway_key=GatewayKey(b"g" * 32))
    transport = httpx.ASGITransport(app=guard)
    return httpx.AsyncClient(transport=transport, base_url="https://gw.test")


async def test_a_session_for_the_mcp_resource_is_accepted_when_configured(stack: Stack) -> None:
    """RFC 8707: a session whose audience is the /mcp URL (what a host asks its
    authorization server for) is accepted once ``[session] resources`` lists it."""
    for_mcp = session_for(stack, "res-ann", "billing", extra={"aud": "https://gw.test/mcp"})
    async with await _guarded(stack) as http:
        assert (await http.post("/mcp", headers=bearer(for_mcp))).status_code == 401
    async with await _guarded(stack, resources=["https://gw.test/mcp"]) as http:
        ok = await http.post("/mcp", headers=bearer(for_mcp))
        assert ok.status_code == 200 and ok.text == "res-ann"
        other = session_for(stack, "res-ann", "billing", extra={"aud": "https://gw.other/mcp"})
        assert (await http.post("/mcp", headers=bearer(other))).status_code == 401


async def test_a_session_without_the_required_scope_is_403(stack: Stack) -> None:
    async with await _guarded(stack, mcp_scopes=["mcp:tools"]) as http:
        plain = session_for(stack, "scope-ann", "billing")
        refused = await http.post("/mcp", headers=bearer(plain))
        assert refused.status_code == 403
        challenge = refused.headers["www-authenticate"]
        assert 'error="insufficient_scope"' in challenge and 'scope="mcp:tools"' in challenge
        scoped = session_for(stack, "scope-ann", "billing", scopes=["mcp:tools"])
        assert (await http.post("/mcp", headers=bearer(scoped))).status_code == 200


async def test_dpop_nonces_are_required_when_configured(stack: Stack) -> None:
    """With server nonces on, a DPoP proof without a live nonce is 401 use_dpop_nonce with
    a fresh DPoP-Nonce, before anything runs; with that nonce it passes."""
    nonces = NonceIssuer(b"n" * 32)
    key = AgentKey()
    token = session_for(stack, "nonce-ann", "billing", key=key)
    htu = "https://gw.test/mcp"
    async with await _guarded(stack, nonces) as http:
        proof = dpop_proof(key, "POST", htu, token)
        refused = await http.post("/mcp", headers={**bearer(token), "DPoP": proof})
        assert refused.status_code == 401
        assert refused.headers["www-authenticate"] == 'DPoP error="use_dpop_nonce"'
        nonce = refused.headers["dpop-nonce"]
        assert nonces.valid(nonce)
        proof = dpop_proof(key, "POST", htu, token, nonce=nonce)
        ok = await http.post("/mcp", headers={**bearer(token), "DPoP": proof})
        assert ok.status_code == 200 and ok.text == "nonce-ann"


def test_no_session_or_argument_reaches_the_gateway_log(stack: Stack, gateway_url: str) -> None:
    """Runs last in this module: the gateway that served it logged no session, no
    signature part of one, and none of the oversized argument."""
    port = gateway_url.rsplit(":", 1)[1]
    log = (stack.logs / f"gateway-{port}.log").read_text()
    assert len(USED) > 10
    for token in USED:
        assert token not in log and token.rsplit(".", 1)[1] not in log
    assert "E" * 100 not in log
