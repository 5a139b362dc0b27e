"""An agent that speaks only HTTP to the gateway: httpx, PyJWT for DPoP proofs.

``gateway_url`` starts one gateway process on the shared test stack (the
``gateway`` NATS identity of the permission model) for the module using it.
"""

from __future__ import annotations

import base64
import hashlib
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import jwt
import pytest

from mcp_handshake.services.dev.devhome import mint_session
from mcp_handshake.services.dev.devstack import Stack
from mcp_handshake.services.dev.procs import free_port, wait_port
from tests.conftest import AgentKey

#: Every session and transaction token the HTTP agents used: none may reach a log.
SECRETS: list[str] = []
#: The health server of each gateway ``gateway_url`` started, by its URL.
HEALTH: dict[str, str] = {}


@pytest.fixture(scope="module")
def gateway_url(stack: Stack) -> Iterator[str]:
    port, health = free_port(), free_port()
    name = f"gateway-{port}"
    proc = stack.start_worker("gateway", port, "--port", str(port), "--health-port", str(health))
    url = f"http://127.0.0.1:{port}"
    HEALTH[url] = f"http://127.0.0.1:{health}"
    try:
        wait_port(port, "gateway")
        yield url
    finally:
        assert proc.popen.poll() is None, "the gateway died during the tests"
        stack.stop_proc(name)


def ath(token: str) -> str:
    digest = hashlib.sha256(token.encode()).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def dpop_proof(
    key: AgentKey,
    htm: str,
    htu: str,
    token: str | None,
    *,
    headers: dict[str, Any] | None = None,
    alg: str = "EdDSA",
    signing_key: Any = None,
    **claims: Any,
) -> str:
    """A DPoP proof (RFC 9449) with plain PyJWT; ``claims`` override or (as ``None``) drop."""
    body: dict[str, Any] = {
        "htm": htm,
        "htu": htu,
        "iat": int(time.time()),
        "jti": uuid.uuid4().hex,
    }
    if token is not None:
        body["ath"] = ath(token)
    body.update(claims)
    body = {k: v for k, v in body.items() if v is not None}
    hdrs = {"typ": "dpop+jwt", "jwk": key.jwk, **(headers or {})}
    hdrs = {k: v for k, v in hdrs.items() if v is not None}
    return jwt.encode(body, signing_key or key.private, algorithm=alg, headers=hdrs)


class HttpAgent:
    """Protocol v1 over HTTP with nothing but an HTTP client and a JOSE library."""

    def __init__(self, client: httpx.AsyncClient, stack: Stack, base_url: str) -> None:
        self.http = client
        self.stack = stack
        self.base = base_url
        self.keys: dict[str, AgentKey] = {}

    def session(self, sub: str, *roles: str, bind: bool = True) -> str:
        key = self.keys.setdefault(sub, AgentKey())
        token = mint_session(
            self.stack.home, sub, roles=list(roles), jkt=key.thumbprint if bind else None
        )
        SECRETS.append(token)
        return token

    def key_of(self, token: str) -> AgentKey:
        sub = jwt.decode(token, options={"verify_signature": False})["sub"]
        return self.keys[sub]

    async def authorize(
        self, session: str | None, tool: str, params: dict[str, Any], **kw: Any
    ) -> httpx.Response:
        headers = {"Authorization": f"Bearer {session}"} if session else {}
        r = await self.http.post(
            f"{self.base}/v1/authorize",
            headers=headers,
            json={"tool": tool, "params": params},
            **kw,
        )
        if r.status_code in (200, 202):
            SECRETS.append(r.json()["token"])
        return r

    async def execute(
        self,
        session: str,
        grant: dict[str, Any],
        tool: str,
        params: dict[str, Any],
        *,
        dpop: str | bool = True,
        scheme: str = "DPoP",
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        """Execute; with ``dpop`` True a fresh proof by the session's key is attached (a
        string is sent as the proof as it is)."""
        url = f"{self.base}/v1/execute"
        hdrs = {
            "Authorization": f"{scheme} {session}",
            "Handshake-Transaction-Token": grant["token"],
        }
        if dpop is True:
            hdrs["DPoP"] = dpop_proof(self.key_of(session), "POST", url, session)
        elif dpop:
            hdrs["DPoP"] = dpop
        hdrs.update(headers or {})
        body = {"transaction_id": grant["transaction_id"], "tool": tool, "params": params}
        return await self.http.post(url, headers=hdrs, json=body)

    async def status(self, session: str, txn: str, wait: float | None = None) -> httpx.Response:
        params = {"wait": str(wait)} if wait is not None else {}
        return await self.http.get(
            f"{self.base}/v1/status/{txn}",
            params=params,
            headers={"Authorization": f"Bearer {session}"},
            timeout=(wait or 0) + 15,
        )

    async def jwks(self) -> dict[str, Any]:
        r = await self.http.get(f"{self.base}/v1/keys")
        assert r.status_code == 200, r.text
        data: dict[str, Any] = r.json()
        return data


def verify_receipt(receipt: str, jwks: dict[str, Any]) -> dict[str, Any]:
    """The receipt's claims, verified with the gateway's JWKS (by ``kid``)."""
    kid = jwt.get_unverified_header(receipt)["kid"]
    (jwk,) = [k for k in jwks["keys"] if k["kid"] == kid]
    claims: dict[str, Any] = jwt.decode(
        receipt, jwt.PyJWK(jwk).key, algorithms=["EdDSA"], options={"verify_aud": False}
    )
    return claims


def error_of(r: httpx.Response) -> str:
    assert r.headers["content-type"].startswith("application/json"), r.text
    body = r.json()
    assert set(body) == {"error"}, body
    assert {"code", "message", "transaction_id", "retryable"} <= set(body["error"]), body
    code: str = body["error"]["code"]
    return code
