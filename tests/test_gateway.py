"""The HTTP gateway against the real stack: every tier's full handshake, with a plain HTTP
client and DPoP proofs, and the statuses and bodies of the protocol's errors."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import nats
import pytest

from mcp_handshake.services.dev.devstack import Stack
from mcp_handshake.services.runtime.service import discover
from tests.conftest import connected
from tests.support.http_agent import (
    HEALTH,
    SECRETS,
    HttpAgent,
    error_of,
    gateway_url,
    verify_receipt,
)

__all__ = ["gateway_url"]

RATE = {"base": "EUR", "quote": "USD"}
KNOWN = "acct_4f9d2a"


def payment(amount: float, to: str = KNOWN) -> dict[str, Any]:
    return {"to_account": to, "amount": amount, "currency": "EUR"}


@pytest.fixture
async def http(stack: Stack, gateway_url: str) -> AsyncIterator[HttpAgent]:
    async with httpx.AsyncClient(timeout=20) as client:
        yield HttpAgent(client, stack, gateway_url)


# -- every tier ---------------------------------------------------------------


async def test_public_tier_full_handshake_and_receipt(http: HttpAgent) -> None:
    alice = http.session("gw-alice", bind=False)
    g = await http.authorize(alice, "payments.get_exchange_rate", RATE)
    assert g.status_code == 200, g.text
    grant = g.json()
    assert grant["status"] == "granted" and grant["tier"] == "public"
    r = await http.execute(
        alice, grant, "payments.get_exchange_rate", RATE, dpop=False, scheme="Bearer"
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["transaction_id"] == grant["transaction_id"]
    claims = verify_receipt(body["receipt"], await http.jwks())
    assert claims["txn"] == grant["transaction_id"] and claims["sub"] == "gw-alice"
    assert claims["ph"] == grant["params_hash"] and claims["tier"] == "public"
    st = await http.status(alice, grant["transaction_id"])
    assert st.status_code == 200 and st.json()["status"] == "executed"


async def test_internal_tier_with_dpop(http: HttpAgent) -> None:
    alice = http.session("gw-billing", "billing")
    g = await http.authorize(alice, "payments.list_invoices", {})
    assert g.status_code == 200, g.text
    grant = g.json()
    assert grant["tier"] == "internal"
    r = await http.execute(alice, grant, "payments.list_invoices", {})
    assert r.status_code == 200, r.text
    claims = verify_receipt(r.json()["receipt"], await http.jwks())
    assert claims["tier"] == "internal" and claims["txn"] == grant["transaction_id"]


async def test_confidential_tier_result_is_masked(http: HttpAgent) -> None:
    carol = http.session("gw-carol", "support")
    params = {"customer_id": "cus_8f3k2m9q"}
    g = await http.authorize(carol, "customers.get_customer", params)
    assert g.status_code == 200, g.text
    grant = g.json()
    assert grant["tier"] == "confidential"
    r = await http.execute(carol, grant, "customers.get_customer", params)
    assert r.status_code == 200, r.text
    customer = r.json()["result"]
    assert customer["email"] == "j***@example.com"
    assert customer["card_number"] == "************4242"
    assert customer["national_id"] == "[redacted]"
    for secret in ("jane.doe@example.com", "4242424242424242", "123-45-6789"):
        assert secret not in r.text
    claims = verify_receipt(r.json()["receipt"], await http.jwks())
    assert claims["tier"] == "confidential"


async def test_restricted_tier_approved_by_the_confirmation_agent(http: HttpAgent) -> None:
    tess = http.session("gw-tess-a", "treasury")
    g = await http.authorize(tess, "payments.send_payment", payment(20))
    assert g.status_code == 202, g.text  # accepted, not yet executable
    grant = g.json()
    assert grant["status"] == "pending_approval" and grant["tier"] == "restricted"
    st = await http.status(tess, grant["transaction_id"], wait=10)
    assert st.status_code == 200, st.text
    assert st.json()["status"] == "approved" and st.json()["decided_by"] == "confirmation-agent"
    r = await http.execute(tess, grant, "payments.send_payment", payment(20))
    assert r.status_code == 200, r.text
    claims = verify_receipt(r.json()["receipt"], await http.jwks())
    assert [a["by"] for a in claims["approvals"]] == ["confirmation-agent"]


async def test_restricted_tier_pending_then_approved_by_a_human(
    http: HttpAgent, stack: Stack
) -> None:
    tess = http.session("gw-tess-b", "treasury")
    params = payment(2500)
    grant = (await http.authorize(tess, "payments.send_payment", params)).json()
    txn = grant["transaction_id"]
    early = await http.execute(tess, grant, "payments.send_payment", params)
    assert early.status_code == 409 and error_of(early) == "approval_pending"
    assert early.json()["error"]["retryable"] is True
    assert int(early.headers["Retry-After"]) >= 1
    # a long poll that ends while still pending says so
    st = await http.status(tess, txn, wait=0.5)
    assert st.status_code == 200 and st.json()["status"] == "pending_approval"
    async with connected(stack) as approver:  # the approvers' path other tests use
        victor = approver.session("gw-victor", "approver")
        for _ in range(50):
            if await approver.preview_hash(victor, txn):
                break
            approver._previews.clear()
            await asyncio.sleep(0.1)
        waiting = asyncio.ensure_future(http.status(tess, txn, wait=20))
        await asyncio.sleep(0.3)
        decided = await approver.decide(victor, txn, "approve")
        assert decided.error is None, decided.body
    st = await waiting  # the long poll answers as soon as it is decided
    assert st.status_code == 200 and st.json()["status"] == "approved", st.text
    assert st.json()["decided_by"] == "gw-victor"
    r = await http.execute(tess, grant, "payments.send_payment", params)
    assert r.status_code == 200, r.text
    claims = verify_receipt(r.json()["receipt"], await http.jwks())
    assert [a["by"] for a in claims["approvals"]] == ["gw-victor"]


async def test_restricted_tier_denied(http: HttpAgent) -> None:
    tess = http.session("gw-tess-c", "treasury")
    grant = (await http.authorize(tess, "payments.send_payment", payment(75_000))).json()
    st = await http.status(tess, grant["transaction_id"], wait=10)
    assert st.json()["status"] == "denied"
    r = await http.execute(tess, grant, "payments.send_payment", payment(75_000))
    assert r.status_code == 403 and error_of(r) == "approval_denied"


async def test_gateway_identity_has_least_privilege(stack: Stack) -> None:
    """The gateway's NATS user asks the agent subjects it serves (approvals list and decide
    among them, with the caller's session), and nothing else."""
    errors: list[Exception] = []

    async def on_error(exc: Exception) -> None:
        errors.append(exc)

    nc = await nats.connect(**stack.connect_options("gateway"), error_cb=on_error)
    try:
        for subject in (
            "handshake.internal.approval.decided.x",
            "$JS.API.STREAM.DELETE.HANDSHAKE_AUDIT",
            "handshake.internal.executor.payments",
            "handshake.audit.gateway.x",
            "$KV.HANDSHAKE_KEYS.x",
        ):
            await nc.publish(subject, b"{}")
        for subject, queue in (
            ("handshake.v1.authorize", "authorize"),
            ("_INBOX.agent.>", ""),
            ("handshake.internal.>", ""),
        ):
            await nc.subscribe(subject, queue=queue)
        await nc.flush()
        await asyncio.sleep(0.3)
        violations = [e for e in errors if "permissions violation" in str(e).lower()]
        assert len(violations) == 8, errors
        r = await nc.request("handshake.v1.keys", b"{}", timeout=5)  # what it may do
        assert b"keys" in r.data
    finally:
        await nc.close()


async def test_health_port(gateway_url: str) -> None:
    async with httpx.AsyncClient(base_url=HEALTH[gateway_url], timeout=10) as client:
        assert (await client.get("/healthz")).status_code == 200
        ready = await client.get("/readyz")
        assert ready.status_code == 200, ready.text


async def test_discovery_shows_the_gateway_and_its_requests(
    http: HttpAgent, stack: Stack, gateway_url: str
) -> None:
    """``mcp-handshake status`` reads these: the gateway's URL and per-route counts."""
    await http.jwks()
    async with connected(stack, "operator") as op:
        answers = await discover(op.nc, "STATS", wait=1.0)
        info = await discover(op.nc, "INFO", wait=1.0)
    (mine,) = [a for a in info if a["metadata"].get("url") == gateway_url]
    (stats,) = [a for a in answers if a["id"] == mine["id"]]
    routes = {e["name"]: e for e in stats["endpoints"]}
    assert set(routes) == {"authorize", "execute", "reconcile", "tools", "status", "keys",
                           "approvals-list", "approvals-decide", "authorize-batch",
                           "execute-batch"}  # fmt: skip
    assert routes["keys"]["num_requests"] >= 1 and routes["keys"]["data"]["outcomes"]["ok"] >= 1
    assert routes["authorize"]["num_requests"] >= 5
    assert routes["execute"]["data"]["outcomes"].get("approval_pending", 0) >= 1


def test_no_secret_in_the_gateway_log(stack: Stack, gateway_url: str) -> None:
    """Last in this module: no session or transaction token the agents sent or got has
    reached the gateway's log."""
    assert len(SECRETS) > 10
    port = gateway_url.rsplit(":", 1)[1]
    log = (stack.logs / f"gateway-{port}.log").read_text()
    assert "serving HTTP" in log
    for secret in SECRETS:
        assert secret not in log
    assert "eyJ" not in log and "Bearer" not in log
