"""The gateway's HTTP hardening, each as an attack on a real gateway process: half-open
connections, request smuggling (TE with CL), framing of /docs, caching of tokens, a
public gateway without a configured URL, weak keys, and DPoP server nonces that cannot
be skipped by going to NATS directly."""

from __future__ import annotations

import asyncio
import json
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import nats
import pytest
import uvicorn

from mcp_handshake.services.core.dpop import GatewayKey, NonceIssuer
from mcp_handshake.services.dev.devhome import mint_session
from mcp_handshake.services.dev.devstack import Stack, StackSpec
from mcp_handshake.services.dev.procs import free_port
from mcp_handshake.services.gateway.app import create_app
from mcp_handshake.services.gateway.forward import Gateway, GatewayOptions
from mcp_handshake.services.gateway.main import server_config
from mcp_handshake.shared.settings import write_private
from mcp_handshake.shared.subjects import Subjects
from tests.conftest import AgentKey, connected, make_stack
from tests.support.http_agent import HttpAgent, dpop_proof, error_of, gateway_url

__all__ = ["gateway_url"]

PUBLIC = "payments.get_exchange_rate"
RATE = {"base": "EUR", "quote": "USD"}
INTERNAL = "payments.list_invoices"


@pytest.fixture
async def http(stack: Stack, gateway_url: str) -> AsyncIterator[HttpAgent]:
    async with httpx.AsyncClient(timeout=20) as client:
        yield HttpAgent(client, stack, gateway_url)


def _address(url: str) -> tuple[str, int]:
    host, port = url.removeprefix("http://").split(":")
    return host, int(port)


def _closed(sock: socket.socket) -> bool:
    try:
        return sock.recv(4096) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


async def test_half_open_connections_are_closed_within_seconds(gateway_url: str) -> None:
    """150 connections that never finish their headers (half send nothing, half a
    request line and one header) are all closed by the gateway within seconds."""
    socks = []
    try:
        for n in range(150):
            sock = socket.create_connection(_address(gateway_url), timeout=5)
            if n % 2:
                sock.sendall(b"POST /v1/authorize HTTP/1.1\r\nHost: gw\r\n")
            sock.setblocking(False)
            socks.append(sock)
        started = time.monotonic()
        open_ = list(socks)
        while open_ and time.monotonic() - started < 12:
            await asyncio.sleep(0.25)
            open_ = [s for s in open_ if not _closed(s)]
        assert not open_, f"{len(open_)} of 150 half-open connections still open"
        assert time.monotonic() - started < 12
    finally:
        for sock in socks:
            sock.close()
    async with httpx.AsyncClient() as client:  # the gateway still serves
        assert (await client.get(f"{gateway_url}/v1/keys")).status_code == 200


async def test_connections_past_the_cap_are_answered_503(stack: Stack) -> None:
    """The server as the gateway runs it (``server_config``) with a cap of 3: while two
    connections are open, the third gets 503; once they close, requests are served."""
    nc = await nats.connect(**stack.connect_options("gateway"))
    opts = GatewayOptions(max_connections=3, public_url="http://127.0.0.1",
                          gateway_key=GatewayKey(b"k" * 32))  # fmt: skip
    server = uvicorn.Server(server_config(create_app(Gateway(nc, Subjects(), opts)), opts))
    sock = socket.create_server(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        for _ in range(200):  # started within 10 s
            if server.started:
                break
            await asyncio.sleep(0.05)
        assert server.started
        held = [socket.create_connection(_address(url)) for _ in range(2)]
        await asyncio.sleep(0.2)
        request = b"GET /v1/keys HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n"
        reply = await asyncio.to_thread(_raw, url, request)
        assert reply.startswith(b"HTTP/1.1 503 "), reply[:200]
        for held_sock in held:
            held_sock.close()
        await asyncio.sleep(0.2)
        reply = await asyncio.to_thread(_raw, url, request)
        assert reply.startswith(b"HTTP/1.1 200 "), reply[:200]
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)
        sock.close()
        await nc.close()


def _raw(url: str, request: bytes) -> bytes:
    with socket.create_connection(_address(url), timeout=10) as sock:
        sock.sendall(request)
        out = b""
        while chunk := sock.recv(65536):
            out += chunk
        return out


async def test_transfer_encoding_with_content_length_is_refused(
    http: HttpAgent, gateway_url: str
) -> None:
    session = http.session("gw-smuggle", "billing")
    body = b'{"tool": "payments.get_exchange_rate", "params": {"base": "EUR", "quote": "USD"}}'
    chunked = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
    request = (
        b"POST /v1/authorize HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n"
        b"Authorization: Bearer " + session.encode() + b"\r\n"
        b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n"
        b"Content-Length: %d\r\n\r\n" % len(chunked)
    ) + chunked
    reply = await asyncio.to_thread(_raw, gateway_url, request)
    assert reply.startswith(b"HTTP/1.1 400 "), reply[:200]
    assert b'"bad_request"' in reply and b'"token"' not in reply
    # the same request without Content-Length goes through
    plain = request.replace(b"Content-Length: %d\r\n" % len(chunked), b"")
    reply = await asyncio.to_thread(_raw, gateway_url, plain)
    assert reply.startswith(b"HTTP/1.1 200 "), reply[:200]


async def test_no_store_on_every_response_carrying_a_token(http: HttpAgent) -> None:
    session = http.session("gw-no-store", "billing")
    r = await http.authorize(session, PUBLIC, RATE)
    assert r.status_code == 200 and "token" in r.json()
    assert r.headers["Cache-Control"] == "no-store"
    grant = r.json()
    r = await http.execute(session, grant, PUBLIC, RATE, dpop=False)
    assert r.status_code == 200 and r.headers["Cache-Control"] == "no-store"
    for r in (
        await http.http.get(
            f"{http.base}/v1/tools", headers={"Authorization": f"Bearer {session}"}
        ),
        await http.http.get(f"{http.base}/v1/tools"),  # 401
        await http.http.get(f"{http.base}/v1/keys"),
    ):
        assert r.headers["Cache-Control"] == "no-store", r.status_code


async def test_docs_cannot_be_framed(gateway_url: str) -> None:
    async with httpx.AsyncClient() as client:
        r = await client.get(f"{gateway_url}/docs")
    assert r.status_code == 200
    assert "frame-ancestors 'none'" in r.headers["Content-Security-Policy"]
    assert r.headers["X-Frame-Options"] == "DENY"


def test_the_gateways_environment_holds_no_redis_password(stack: Stack, gateway_url: str) -> None:
    """The gateway never uses Redis: its process environment has neither the URL nor the
    password, nor have the audit worker's, the demo target's and nats-server's (the
    execute worker's, which uses it, has both)."""
    password = (stack.home / "secrets" / "redis_password").read_text().strip()
    port = _address(gateway_url)[1]
    (gateway,) = [p for p in stack.procs if p.name == f"gateway-{port}"]
    (execute, *_) = [p for p in stack.procs if p.name.startswith("execute-")]
    environ = Path(f"/proc/{gateway.popen.pid}/environ").read_bytes()
    assert b"HANDSHAKE_REDIS_URL" not in environ and password.encode() not in environ
    assert b"HANDSHAKE_GATEWAY_KEY_FILE" in environ
    for other in [p for p in stack.procs if p.name in ("target", "nats-server")
                  or p.name.startswith("audit-")]:  # fmt: skip
        environ = Path(f"/proc/{other.popen.pid}/environ").read_bytes()
        assert password.encode() not in environ, other.name
    environ = Path(f"/proc/{execute.popen.pid}/environ").read_bytes()
    assert b"HANDSHAKE_REDIS_URL" in environ and password.encode() in environ


def _gateway(stack: Stack, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """A gateway process that must refuse to start (it is killed after 60 s)."""
    cli = [sys.executable, "-m", "mcp_handshake.services.dev.cli", "worker", "gateway", *args]
    return subprocess.run(
        cli, env={**stack.env("gateway"), **env}, capture_output=True, text=True, timeout=60
    )


def test_a_public_gateway_without_a_public_url_refuses_to_start(stack: Stack) -> None:
    port = free_port()
    done = _gateway(stack, "--host", "0.0.0.0", "--port", str(port))  # noqa: S104
    assert done.returncode != 0
    (line,) = [x for x in done.stderr.splitlines() if "--public-url" in x]
    assert "0.0.0.0" in line  # noqa: S104
    with pytest.raises(OSError):  # it never listened
        socket.create_connection(("127.0.0.1", port), timeout=1).close()


@pytest.mark.parametrize("weak", ["short", "open"])
def test_a_weak_gateway_key_refuses_to_start(stack: Stack, tmp_path: Path, weak: str) -> None:
    key = tmp_path / "gateway_key"
    write_private(key, "x" * 8 if weak == "short" else secrets.token_urlsafe(48))
    if weak == "open":
        key.chmod(0o666)
    port = str(free_port())
    done = _gateway(stack, "--port", port, HANDSHAKE_GATEWAY_KEY_FILE=str(key))
    assert done.returncode != 0
    assert "gateway key" in done.stderr
    assert ("32 bytes" if weak == "short" else "readable by") in done.stderr
    assert key.read_text() not in done.stderr + done.stdout


# -- DPoP server nonces, enforced by the gateway and by the execute worker ----------


@pytest.fixture(scope="module")
def nonce_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A stack whose gateway and execute worker both require DPoP server nonces."""
    home = tmp_path_factory.mktemp("nonces")
    write_private(home / "nonce.key", secrets.token_urlsafe(48))
    st = make_stack(home / "home", StackSpec(gateway=1))
    st.extra_env["HANDSHAKE_GATEWAY_DPOP_NONCE_KEY_FILE"] = str(home / "nonce.key")
    asyncio.run(st.start())
    try:
        yield st
    finally:
        st.stop()


def _nonces(stack: Stack) -> NonceIssuer:
    return NonceIssuer.from_file(Path(stack.extra_env["HANDSHAKE_GATEWAY_DPOP_NONCE_KEY_FILE"]))


def test_up_starts_its_gateway_with_a_public_url(nonce_stack: Stack) -> None:
    """A stack started as ``up`` starts it (Stack.start, gateway=1) gives its gateway
    ``--public-url``, the URL it publishes in stack.json."""
    (gateway,) = [p for p in nonce_stack.procs if p.name.startswith("gateway-")]
    argv = Path(f"/proc/{gateway.popen.pid}/cmdline").read_bytes().split(b"\0")
    url = argv[argv.index(b"--public-url") + 1].decode()
    assert url == nonce_stack.gateway_url
    assert json.loads((nonce_stack.home / "stack.json").read_text())["gateway_url"] == url


async def test_server_nonces_at_the_gateway(nonce_stack: Stack) -> None:
    """Without a live nonce: 401 use_dpop_nonce with a fresh one, the token unused; the
    retry with that nonce goes through."""
    base = nonce_stack.gateway_url
    async with httpx.AsyncClient(timeout=20) as client:
        http = HttpAgent(client, nonce_stack, base)
        session = http.session("gw-nonce", "billing")
        key = http.key_of(session)
        grant = (await http.authorize(session, INTERNAL, {})).json()
        url = f"{base}/v1/execute"
        nonce = ""
        for bad in (None, "123.forged", f"{int(time.time()) - 3600}.x"):
            proof = dpop_proof(key, "POST", url, session, nonce=bad)
            r = await http.execute(session, grant, INTERNAL, {}, dpop=proof)
            assert r.status_code == 401 and error_of(r) == "use_dpop_nonce", r.text
            assert r.headers["WWW-Authenticate"] == 'DPoP error="use_dpop_nonce"'
            assert r.json()["error"]["retryable"] is True
            nonce = r.headers["DPoP-Nonce"]
        proof = dpop_proof(key, "POST", url, session, nonce=nonce)
        r = await http.execute(session, grant, INTERNAL, {}, dpop=proof)
        assert r.status_code == 200, r.text
        assert _nonces(nonce_stack).valid(r.headers["DPoP-Nonce"])


async def test_a_missing_nonce_cannot_bypass_the_gateway_over_nats(nonce_stack: Stack) -> None:
    """Even with the gateway's identity and key (a correctly tagged htu), a proof without
    a live nonce is refused by the execute worker; the same with a nonce executes."""
    key = AgentKey()
    tagger = GatewayKey.from_file(nonce_stack.home / "secrets" / "gateway_key")
    url = f"{nonce_stack.gateway_url}/v1/execute"
    async with connected(nonce_stack) as agent, connected(nonce_stack, "gateway") as gw:
        session = mint_session(nonce_stack.home, "gw-nonce-nats", roles=["billing"],
                               jkt=key.thumbprint)  # fmt: skip
        results = []
        for nonce in (None, "1.forged", _nonces(nonce_stack).issue()):
            grant = (await agent.authorize(session, INTERNAL, {})).body
            proof = dpop_proof(key, "POST", url, session, nonce=nonce)
            headers = {"Handshake-Transaction-Token": grant["token"], "DPoP": proof,
                       "Handshake-DPoP-Htu": url,
                       "Handshake-DPoP-Htu-Tag": tagger.tag(url, proof)}  # fmt: skip
            body = {"transaction_id": grant["transaction_id"], "tool": INTERNAL, "params": {}}
            r = await gw.request(gw.s.execute, body, session, headers)
            results.append((r.error, r.body.get("error", {}).get("message", "")))
    assert results[0] == ("validation_failed", "DPoP proof without a live server nonce")
    assert results[1] == results[0]
    assert results[2][0] is None, results
