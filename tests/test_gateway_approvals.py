"""Approvals over HTTP (``GET /v1/approvals``, ``POST /v1/approvals/{txn}/decide``)
against the real workers: the approval worker's rules hold unchanged (roles, no
self-approval, signed decisions), and an approved transaction is then executed with
the token from the 202."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from mcp_handshake.services.dev.devstack import Stack
from tests.support.http_agent import HttpAgent, error_of, gateway_url

__all__ = ["gateway_url"]

TOOL = "payments.send_payment"  # restricted: a human approver decides


@pytest.fixture
async def http(stack: Stack, gateway_url: str) -> AsyncIterator[HttpAgent]:
    async with httpx.AsyncClient(timeout=20) as client:
        yield HttpAgent(client, stack, gateway_url)


def _params(n: int) -> dict[str, Any]:
    return {"to_account": f"acct_unknown{n}", "amount": 2500, "currency": "EUR"}


async def _pending(http: HttpAgent, requester: str, n: int) -> dict[str, Any]:
    r = await http.authorize(requester, TOOL, _params(n))
    assert r.status_code == 202 and r.json()["status"] == "pending_approval", r.text
    grant: dict[str, Any] = r.json()
    return grant


async def _list(http: HttpAgent, session: str) -> httpx.Response:
    return await http.http.get(
        f"{http.base}/v1/approvals", headers={"Authorization": f"Bearer {session}"}
    )


async def _decide(
    http: HttpAgent, session: str, txn: str, body: Any, proof: str | None = None
) -> httpx.Response:
    headers = {"Authorization": f"Bearer {session}"}
    if proof is not None:
        headers["Handshake-Proof"] = proof
    url = f"{http.base}/v1/approvals/{txn}/decide"
    return await http.http.post(url, headers=headers, json=body)


async def test_list_decide_signed_then_execute_the_same_token(http: HttpAgent) -> None:
    tess = http.session("gw-appr-tess", "treasury")
    victor = http.session("gw-appr-victor", "approver")
    grant = await _pending(http, tess, 1)
    txn = grant["transaction_id"]
    r = await _list(http, victor)
    assert r.status_code == 200 and r.headers["Cache-Control"] == "no-store", r.text
    (item,) = [a for a in r.json()["approvals"] if a["transaction_id"] == txn]
    assert item["sub"] == "gw-appr-tess" and item["tool"] == TOOL and item["quorum"] == 1
    # victor's session is bound to his key: his decision is signed, as on NATS
    proof = http.key_of(victor).decision(txn, item["preview_hash"], "approve")
    r = await _decide(http, victor, txn, {"decision": "approve", "reason": "ok"}, proof)
    assert r.status_code == 200, r.text
    assert r.json() == {"transaction_id": txn, "status": "approved", "approvals": 1,
                        "quorum": 1, "tool": TOOL, "requester": "gw-appr-tess",
                        "tier": "restricted", "preview_hash": item["preview_hash"]}  # fmt: skip
    status = await http.http.get(
        f"{http.base}/v1/status/{txn}", headers={"Authorization": f"Bearer {tess}"}
    )
    assert status.json()["status"] == "approved" and status.json()["decided_by"] == "gw-appr-victor"
    done = await http.execute(tess, grant, TOOL, _params(1))
    assert done.status_code == 200, done.text
    assert txn not in [a["transaction_id"] for a in (await _list(http, victor)).json()["approvals"]]
    # decided: a second decision is refused
    deny = http.key_of(victor).decision(txn, item["preview_hash"], "deny")
    again = await _decide(http, victor, txn, {"decision": "deny"}, deny)
    assert again.status_code == 409 and error_of(again) == "invalid_transaction", again.text


async def test_a_wrong_role_is_refused(http: HttpAgent) -> None:
    tess = http.session("gw-appr-tess2", "treasury")
    bob = http.session("gw-appr-bob", "billing")
    txn = (await _pending(http, tess, 2))["transaction_id"]
    r = await _list(http, bob)
    assert r.status_code == 403 and error_of(r) == "forbidden", r.text
    r = await _decide(http, bob, txn, {"decision": "approve"},
                      http.key_of(bob).decision(txn, "sha256:x", "approve"))  # fmt: skip
    assert r.status_code == 403 and error_of(r) == "forbidden", r.text


async def test_self_approval_is_refused(http: HttpAgent) -> None:
    """An approver who requested the transaction neither sees nor decides it."""
    tess = http.session("gw-appr-self", "treasury", "approver")
    txn = (await _pending(http, tess, 3))["transaction_id"]
    r = await _list(http, tess)
    assert r.status_code == 200
    assert txn not in [a["transaction_id"] for a in r.json()["approvals"]]
    victor = http.session("gw-appr-victor3", "approver")
    (item,) = [a for a in (await _list(http, victor)).json()["approvals"]
               if a["transaction_id"] == txn]  # fmt: skip
    proof = http.key_of(tess).decision(txn, item["preview_hash"], "approve")
    r = await _decide(http, tess, txn, {"decision": "approve"}, proof)
    assert r.status_code == 403 and error_of(r) == "forbidden", r.text
    assert "own" in r.json()["error"]["message"]


async def test_an_unsigned_decision_where_signing_is_required_is_refused(
    http: HttpAgent,
) -> None:
    """A bound approver must sign; a signature over another decision is refused too."""
    tess = http.session("gw-appr-tess4", "treasury")
    victor = http.session("gw-appr-victor4", "approver")
    txn = (await _pending(http, tess, 4))["transaction_id"]
    (item,) = [a for a in (await _list(http, victor)).json()["approvals"]
               if a["transaction_id"] == txn]  # fmt: skip
    r = await _decide(http, victor, txn, {"decision": "approve"})
    assert r.status_code == 422 and error_of(r) == "validation_failed", r.text
    deny_signed = http.key_of(victor).decision(txn, item["preview_hash"], "deny")
    r = await _decide(http, victor, txn, {"decision": "approve"}, deny_signed)
    assert r.status_code == 422 and error_of(r) == "validation_failed", r.text
    # still pending: nothing was counted
    assert txn in [a["transaction_id"] for a in (await _list(http, victor)).json()["approvals"]]


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ("not json", 400, "bad_request"),
        (["approve"], 400, "bad_request"),
        ({"decision": "approve", "transaction_id": "another"}, 400, "bad_request"),
        ({"decision": "maybe"}, 400, "bad_request"),
        ({"decision": "approve", "extra": 1}, 400, "bad_request"),
    ],
)
async def test_bad_decide_bodies(http: HttpAgent, body: Any, status: int, code: str) -> None:
    victor = http.session("gw-appr-victor5", "approver")
    url = f"{http.base}/v1/approvals/some-txn/decide"
    headers = {"Authorization": f"Bearer {victor}"}
    if isinstance(body, str):
        r = await http.http.post(url, headers=headers, content=body)
    else:
        r = await http.http.post(url, headers=headers, json=body)
    assert r.status_code == status and error_of(r) == code, r.text
