"""Every protocol error over HTTP: its status and body, and what the gateway adds
(Retry-After, challenges, route errors). Unreachable NATS fails closed."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import nats
import pytest

from mcp_handshake.services.dev.devstack import Stack
from mcp_handshake.services.gateway.app import create_app
from mcp_handshake.services.gateway.forward import Gateway, GatewayOptions
from mcp_handshake.shared.subjects import Subjects
from tests.support.http_agent import HttpAgent, error_of, gateway_url

__all__ = ["gateway_url"]

RATE = {"base": "EUR", "quote": "USD"}


@pytest.fixture
async def http(stack: Stack, gateway_url: str) -> AsyncIterator[HttpAgent]:
    async with httpx.AsyncClient(timeout=20) as client:
        yield HttpAgent(client, stack, gateway_url)


def _expect(r: httpx.Response, status: int, code: str, session: str | None = None) -> None:
    assert r.status_code == status, r.text
    assert error_of(r) == code, r.text
    assert not r.json()["error"]["message"].startswith("Traceback")
    if session:
        assert session not in r.text


async def test_bad_request(http: HttpAgent) -> None:
    alice = http.session("gw-err-a", bind=False)
    auth = {"Authorization": f"Bearer {alice}"}
    for body in (b"not json", b"[1, 2]", b'{"tool": 5, "params": {}}', b""):
        r = await http.http.post(f"{http.base}/v1/authorize", content=body, headers=auth)
        _expect(r, 400, "bad_request", alice)
    for wait in ("-1", "soon", "nan", "inf"):
        r = await http.http.get(f"{http.base}/v1/status/x", params={"wait": wait}, headers=auth)
        _expect(r, 400, "bad_request", alice)


async def test_unauthenticated_with_a_challenge(http: HttpAgent) -> None:
    for headers in ({}, {"Authorization": "Bearer not-a-jwt"}, {"Authorization": "Basic eDp5"}):
        r = await http.http.post(
            f"{http.base}/v1/authorize",
            headers=headers,
            json={"tool": "payments.get_exchange_rate", "params": RATE},
        )
        _expect(r, 401, "unauthenticated")
        assert "Bearer" in r.headers["WWW-Authenticate"]
        assert "DPoP" in r.headers["WWW-Authenticate"]
    r = await http.http.get(f"{http.base}/v1/tools")
    _expect(r, 401, "unauthenticated")


async def test_forbidden_unknown_tool_invalid_params(http: HttpAgent) -> None:
    alice = http.session("gw-err-b", "billing", bind=False)
    _expect(
        await http.authorize(alice, "customers.get_customer", {"customer_id": "cus_8f3k2m9q"}),
        403,
        "forbidden",
        alice,
    )
    _expect(await http.authorize(alice, "no.such_tool", {}), 404, "unknown_tool", alice)
    _expect(
        await http.authorize(alice, "payments.get_exchange_rate", {**RATE, "x": 1}),
        422,
        "invalid_params",
        alice,
    )


async def test_invalid_transaction_for_a_garbage_token(http: HttpAgent) -> None:
    alice = http.session("gw-err-c", bind=False)
    grant = {"transaction_id": "00000000-0000-0000-0000-000000000000", "token": "A" * 43}
    r = await http.execute(alice, grant, "payments.get_exchange_rate", RATE, dpop=False)
    _expect(r, 409, "invalid_transaction", alice)
    r = await http.status(alice, grant["transaction_id"])
    _expect(r, 409, "invalid_transaction", alice)


async def test_payload_too_large_before_anything_else(http: HttpAgent) -> None:
    big = {"tool": "test.echo", "params": {"text": "x" * 70_000}}
    r = await http.http.post(f"{http.base}/v1/authorize", json=big)  # no session either
    _expect(r, 413, "payload_too_large")


async def test_validation_failed_without_a_proof_burns_the_token(http: HttpAgent) -> None:
    alice = http.session("gw-err-d", "billing")
    grant = (await http.authorize(alice, "payments.list_invoices", {})).json()
    r = await http.execute(alice, grant, "payments.list_invoices", {}, dpop=False)
    _expect(r, 422, "validation_failed", alice)
    again = await http.execute(alice, grant, "payments.list_invoices", {})
    _expect(again, 409, "invalid_transaction", alice)


async def test_rate_limited_with_retry_after(http: HttpAgent) -> None:
    alice = http.session("gw-err-e", bind=False)
    codes = [(await http.authorize(alice, "test.limited", {"text": "hi"})) for _ in range(5)]
    limited = [r for r in codes if r.status_code == 429]
    assert limited, [r.status_code for r in codes]
    _expect(limited[0], 429, "rate_limited", alice)
    assert limited[0].json()["error"]["retryable"] is True
    assert int(limited[0].headers["Retry-After"]) >= 1


async def test_target_error_and_outcome_unknown(http: HttpAgent) -> None:
    carol = http.session("gw-err-f", "support")
    params = {"customer_id": "cus_doesnotexist"}
    grant = (await http.authorize(carol, "customers.get_customer", params)).json()
    r = await http.execute(carol, grant, "customers.get_customer", params)
    _expect(r, 502, "target_error", carol)
    assert r.json()["error"]["transaction_id"] == grant["transaction_id"]
    alice = http.session("gw-err-g", bind=False)
    grant = (await http.authorize(alice, "test.sleep", {"seconds": 3})).json()
    r = await http.execute(alice, grant, "test.sleep", {"seconds": 3}, dpop=False)
    _expect(r, 504, "outcome_unknown", alice)
    assert r.json()["error"]["transaction_id"] == grant["transaction_id"]


async def test_routes_and_methods(http: HttpAgent) -> None:
    _expect(await http.http.get(f"{http.base}/v2/nothing"), 404, "not_found")
    r = await http.http.get(f"{http.base}/v1/authorize")
    _expect(r, 405, "method_not_allowed")
    assert "POST" in r.headers["Allow"]


async def test_both_proof_kinds_at_once_are_refused(http: HttpAgent) -> None:
    alice = http.session("gw-err-h", "billing")
    grant = (await http.authorize(alice, "payments.list_invoices", {})).json()
    r = await http.execute(
        alice, grant, "payments.list_invoices", {}, headers={"Handshake-Proof": "x.y.z"}
    )
    _expect(r, 400, "bad_request", alice)


async def test_no_cors_by_default(http: HttpAgent) -> None:
    r = await http.http.options(
        f"{http.base}/v1/authorize",
        headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
    )
    assert "access-control-allow-origin" not in r.headers


# -- in-process gateways: NATS unreachable, a bug ---------------------------------


async def _app_client(
    stack: Stack, *, close: bool = False, options: GatewayOptions | None = None
) -> tuple[Any, httpx.AsyncClient]:
    nc = await nats.connect(**stack.connect_options("gateway"))
    if close:
        await nc.close()
    app = create_app(Gateway(nc, Subjects(), options or GatewayOptions()))
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw.test")
    return nc, client


async def test_unreachable_nats_is_unavailable(stack: Stack) -> None:
    _, client = await _app_client(stack, close=True)
    async with client:
        for r in (
            await client.get("/v1/keys"),
            await client.post("/v1/authorize", json={"tool": "x", "params": {}}),
        ):
            _expect(r, 503, "unavailable")
            assert r.json()["error"]["retryable"] is True and r.headers["Retry-After"] == "1"


async def test_a_bug_is_internal_with_no_detail(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    nc, client = await _app_client(stack)

    async def broken(*args: Any, **kw: Any) -> Any:
        raise RuntimeError("secret detail")

    monkeypatch.setattr(Gateway, "forward", broken)
    try:
        async with client:
            r = await client.get("/v1/keys")
        _expect(r, 500, "internal")
        assert "secret detail" not in r.text
    finally:
        await nc.close()


async def test_a_slow_body_is_a_request_timeout(stack: Stack) -> None:
    nc, client = await _app_client(stack, options=GatewayOptions(body_timeout_s=0.3))

    async def slowly() -> AsyncIterator[bytes]:
        yield b'{"tool": "test.echo", '
        await asyncio.sleep(1.5)
        yield b'"params": {"text": "hi"}}'

    try:
        async with client:
            r = await client.post("/v1/authorize", content=slowly())
        _expect(r, 408, "request_timeout")
    finally:
        await nc.close()


async def test_cors_only_for_configured_origins(stack: Stack) -> None:
    options = GatewayOptions(cors_origins=("https://app.example",))
    nc, client = await _app_client(stack, options=options)
    preflight = {
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, dpop",
    }
    try:
        async with client:
            ok = await client.options(
                "/v1/execute", headers={"Origin": "https://app.example", **preflight}
            )
            other = await client.options(
                "/v1/execute", headers={"Origin": "https://evil.example", **preflight}
            )
        assert ok.status_code == 200
        assert ok.headers["access-control-allow-origin"] == "https://app.example"
        assert "dpop" in ok.headers["access-control-allow-headers"].lower()
        assert "access-control-allow-origin" not in other.headers
    finally:
        await nc.close()
