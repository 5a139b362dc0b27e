"""Attacks on the gateway's HTTP faces that no other module covers, against the real stack.

- A body trickled to ``/mcp`` by a host with a valid session: the connection is answered
  ``408`` and closed once the gateway's body deadline passes, as on ``/v1/*``, instead
  of being held open for as long as the sender likes (a slowloris past the headers).
- ``Host`` and ``Origin`` spellings a lax check lets through: a port of non-ASCII
  digits (``\xb2``, read as ``²``, which Python calls a digit) and a second ``Origin``
  after an allowed one are refused at ``/mcp``.
- A body that is not one JSON-RPC message (a batch array, a wrong ``jsonrpc``): ``400``
  without the arguments it carried (the MCP SDK's own refusal quotes the whole body).
- ``handshake_wait`` with ``wait_s: NaN`` (JSON-RPC parsers accept it): refused as
  ``invalid_params`` at once, at the gateway's ``/mcp`` and in the local MCP server,
  instead of a wait that never runs out and polls the approval worker in a loop; an
  integer too large for a float waits the bound (it was an ``internal`` error).
- Over NATS, a gateway's ``Handshake-DPoP-Htu-Tag`` taken from one request and sent with
  another proof is refused: the tag vouches for the proof it was made for only.
"""

from __future__ import annotations

import asyncio
import socket
import time

import httpx
import msgspec
import nats

from mcp_handshake.client import PendingCall
from mcp_handshake.client.mcp_server import Calls
from mcp_handshake.services.core.config import load_config
from mcp_handshake.services.core.dpop import GatewayKey
from mcp_handshake.services.core.sessions import SessionVerifier
from mcp_handshake.services.dev.devhome import mint_session
from mcp_handshake.services.dev.devstack import Stack
from mcp_handshake.services.gateway.forward import Gateway, GatewayOptions
from mcp_handshake.services.gateway.mcp_auth import McpCaller
from mcp_handshake.services.gateway.mcp_calls import MAX_PENDING_PER_USER, GatewayCalls
from mcp_handshake.shared.subjects import Subjects
from mcp_handshake.shared.wire import Grant
from tests.conftest import AgentKey, connected
from tests.support.http_agent import dpop_proof, gateway_url
from tests.test_gateway_mcp import INIT, session_for
from tests.test_mcp_server import error_code, text

__all__ = ["gateway_url"]

SECRET = "acct-rt-3f9a-not-for-echo"
TOOL = "payments.list_invoices"  # internal tier: a proof of possession is required

#: The gateway's default body deadline (``GatewayOptions.body_timeout_s``), plus margin.
BODY_DEADLINE_S = 10.0 + 4.0


def _trickle(port: int, head: str, body: bytes, give_up_s: float) -> tuple[str, float]:
    """Send ``head``, then ``body`` one byte a second until the gateway closes the
    connection; what came back, and when its first byte did."""
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(head.encode() + f"Content-Length: {len(body)}\r\n\r\n".encode())
        s.settimeout(1)
        start, got, answered = time.monotonic(), b"", float("inf")
        for i in range(len(body)):
            if time.monotonic() - start > give_up_s:
                return f"still open; got {got[:40]!r}", answered
            try:
                s.sendall(body[i : i + 1])
                data = s.recv(200)
            except TimeoutError:
                continue
            except OSError:
                break
            if not data:
                break
            answered, got = min(answered, time.monotonic() - start), got + data
        return got.decode(errors="replace"), answered


async def test_a_trickled_mcp_body_is_cut_off(stack: Stack, gateway_url: str) -> None:
    port = int(gateway_url.rsplit(":", 1)[1])
    token = session_for(stack, "rt-slow", "billing")
    body = b'{"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}' * 2
    head = (f"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"Authorization: Bearer {token}\r\nContent-Type: application/json\r\n"
            "Accept: application/json, text/event-stream\r\n")  # fmt: skip
    got, after = await asyncio.to_thread(_trickle, port, head, body, BODY_DEADLINE_S + 6)
    assert got.startswith("HTTP/1.1 408 "), got
    assert after < BODY_DEADLINE_S and token not in got


async def test_a_captured_gateway_tag_does_not_carry_another_proof(stack: Stack) -> None:
    """An agent on NATS that got hold of a gateway-tagged ``htu`` (the tag the gateway made
    for one proof) sends it with a proof of its own, for the real URI and for a phishing
    site's: refused, and the token used up. The tag vouches for that proof alone."""
    key = AgentKey()
    session = mint_session(stack.home, "rt-tag", roles=["billing"], jkt=key.thumbprint)
    gateway_key = GatewayKey.from_file(stack.home / "secrets" / "gateway_key")
    real = "http://127.0.0.1:8080/v1/execute"
    captured = gateway_key.tag(real, dpop_proof(key, "POST", real, session))
    async with connected(stack) as agent:
        for htu in (real, "https://phish.example/v1/execute"):
            grant = (await agent.authorize(session, TOOL, {})).body
            body = {"transaction_id": grant["transaction_id"], "tool": TOOL, "params": {}}
            headers = {"Handshake-Transaction-Token": grant["token"],
                       "DPoP": dpop_proof(key, "POST", htu, session),
                       "Handshake-DPoP-Htu": real, "Handshake-DPoP-Htu-Tag": captured}  # fmt: skip
            r = await agent.request(agent.s.execute, body, session, headers)
            assert r.error == "validation_failed", r.body
            assert "honoured only from the gateway" in r.body["error"]["message"]
            good = key.proof(grant["transaction_id"], TOOL, grant["params_hash"])
            headers = {"Handshake-Transaction-Token": grant["token"], "Handshake-Proof": good}
            r = await agent.request(agent.s.execute, body, session, headers)
            assert r.error == "invalid_transaction", r.body


def _raw_mcp(port: int, headers: bytes, token: str) -> bytes:
    """One initialize to ``/mcp`` with these raw header lines (as no HTTP client sends)."""
    body = msgspec.json.encode(INIT)
    head = (b"POST /mcp HTTP/1.1\r\n" + headers + b"Authorization: Bearer " + token.encode()
            + b"\r\nContent-Type: application/json\r\nConnection: close\r\n"
            + b"Accept: application/json, text/event-stream\r\n"
            + b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n")  # fmt: skip
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(head + body)
        s.settimeout(10)
        return s.recv(20)


async def test_lax_host_and_origin_spellings_are_refused(stack: Stack, gateway_url: str) -> None:
    port = int(gateway_url.rsplit(":", 1)[1])
    token = session_for(stack, "rt-host", "billing")
    host = b"Host: 127.0.0.1:%d\r\n" % port
    cases = [
        (b"Host: 127.0.0.1:\xb2\xb3\r\n", b"421"),
        (b"Host: localhost:\xb9\r\n", b"421"),
        (host + b"Origin: http://localhost:\xb9\r\n", b"403"),
        (host + b"Origin: http://127.0.0.1:%d\r\nOrigin: https://evil.example\r\n" % port, b"403"),
        (host + b"Origin: http://127.0.0.1:%d\r\n" % port, b"200"),  # the control
    ]
    for headers, status in cases:
        answer = await asyncio.to_thread(_raw_mcp, port, headers, token)
        assert answer.startswith(b"HTTP/1.1 " + status), (headers, answer)


async def _no_progress(done: float, total: float | None, message: str | None) -> None:
    pass


async def test_a_nan_wait_is_refused_at_once(stack: Stack) -> None:
    cfg = load_config(stack.home / "handshake.toml")
    verifier = await SessionVerifier.create(cfg.session, cfg.path.parent)
    key, htu = AgentKey(), "http://gw.test/mcp"
    session = session_for(stack, "rt-nan", "treasury", key=key)

    def who() -> McpCaller:
        proof = dpop_proof(key, "POST", htu, session)
        return McpCaller(verifier.verify(f"Bearer {session}"), session, proof, htu)

    nc = await nats.connect(**stack.connect_options("gateway"))
    try:
        options = GatewayOptions(
            gateway_key=GatewayKey.from_file(stack.home / "secrets" / "gateway_key")
        )
        calls = GatewayCalls(Gateway(nc, Subjects(), options), wait_bound_s=0.5)
        params = {"to_account": "acct_4f9d2a", "amount": 640, "currency": "EUR"}
        pending = await calls.call(who(), "payments__send_payment", params, _no_progress)
        assert pending.structured_content is not None, text(pending)
        txn = pending.structured_content["transaction_id"]
        args = {"transaction_id": txn, "wait_s": float("nan")}
        refused = await asyncio.wait_for(calls.call(who(), "handshake_wait", args, _no_progress), 5)
        assert error_code(refused) == "invalid_params", text(refused)
        # An integer too large for a float is the longest wait there is: the bound.
        huge = {"transaction_id": txn, "wait_s": 10**400}
        still = await asyncio.wait_for(calls.call(who(), "handshake_wait", huge, _no_progress), 5)
        assert still.structured_content is not None, text(still)
        assert still.structured_content["status"] == "pending_approval", text(still)
    finally:
        await nc.close()

    # The local MCP server (no pending call is needed: it refuses before looking one up).
    local = await Calls(object()).call("handshake_wait", args, _no_progress)  # type: ignore[arg-type]
    assert error_code(local) == "invalid_params", text(local)


async def test_a_malformed_mcp_body_is_not_quoted_back(stack: Stack, gateway_url: str) -> None:
    token = session_for(stack, "rt-quote", "billing")
    args = {"quote": "USD", "base": SECRET}  # last: what a truncated quote keeps
    call = {"jsonrpc": "2.0", "id": 2, "method": "tools/call",
            "params": {"name": "payments__get_exchange_rate", "arguments": args}}  # fmt: skip
    headers = {"Accept": "application/json, text/event-stream", "Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient() as http:
        for body in ([INIT, call], {**call, "jsonrpc": "1.0"}, {**call, "method": 7}):
            refused = await http.post(f"{gateway_url}/mcp", json=body, headers=headers)
            assert refused.status_code == 400, refused.text
            assert refused.json()["error"]["code"] < 0
            # pydantic quotes a value's head and tail ('...t-3f9a-not-for-echo'): neither
            assert SECRET[:12] not in refused.text and SECRET[-12:] not in refused.text
        ok = await http.post(f"{gateway_url}/mcp", json=INIT, headers=headers)
        assert ok.status_code == 200, ok.text


def test_one_user_cannot_push_other_users_pending_calls_out() -> None:
    """The gateway keeps at most MAX_PENDING_PER_USER pending calls per user: a user who
    leaves thousands pending forgets their own oldest, never another user's."""
    calls = GatewayCalls(Gateway(None, Subjects(), GatewayOptions()), wait_bound_s=0.5)  # type: ignore[arg-type]
    later = time.time() + 600

    def pending(txn: str) -> PendingCall:
        grant = Grant(transaction_id=txn, token="t", status="pending_approval", tier="restricted",
                      params_hash="sha256:" + "0" * 64, expires_at=later)  # fmt: skip
        return PendingCall("payments.send_payment", {}, grant)

    calls._remember(("victim", "v-1"), pending("v-1"))
    for i in range(5 * MAX_PENDING_PER_USER):
        calls._remember(("mallory", f"m-{i}"), pending(f"m-{i}"))
    kept = calls._pending
    assert ("victim", "v-1") in kept
    assert sum(1 for user, _ in kept if user == "mallory") == MAX_PENDING_PER_USER
    assert ("mallory", f"m-{5 * MAX_PENDING_PER_USER - 1}") in kept  # the newest stay
