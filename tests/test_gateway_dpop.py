"""DPoP (RFC 9449) over the gateway, as attacks: every refused proof is refused by the
execute worker (``validation_failed``, and the token is used up), the gateway cannot
skip the check, a proof from an independent JOSE library works, and server nonces."""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import jwt
import pytest
from joserfc import jwt as jose_jwt
from joserfc.jwk import ECKey, OKPKey

from mcp_handshake.services.core.dpop import GatewayKey, normalize_htu
from mcp_handshake.services.dev.devhome import mint_session
from mcp_handshake.services.dev.devstack import Stack
from mcp_handshake.services.gateway.nonce import NONCE_TTL_S, NonceIssuer
from tests.conftest import AgentKey, connected
from tests.support.http_agent import HttpAgent, dpop_proof, error_of, gateway_url

__all__ = ["gateway_url"]

TOOL = "payments.list_invoices"  # internal tier: a proof of possession is required


@pytest.fixture
async def http(stack: Stack, gateway_url: str) -> AsyncIterator[HttpAgent]:
    async with httpx.AsyncClient(timeout=20) as client:
        yield HttpAgent(client, stack, gateway_url)


def _unsigned(key: AgentKey, claims: dict[str, Any]) -> str:
    return jwt.encode(claims, None, algorithm="none", headers={"typ": "dpop+jwt", "jwk": key.jwk})


# Each attack: (session, key, execute URL) -> the DPoP header an attacker sends.
Attack = Callable[[str, AgentKey, str], str]
OTHER_KEY = AgentKey()
ATTACKS: dict[str, Attack] = {
    "wrong htm": lambda s, k, u: dpop_proof(k, "GET", u, s),
    "wrong htu host": lambda s, k, u: dpop_proof(k, "POST", "https://evil.example/v1/execute", s),
    "wrong htu path": lambda s, k, u: dpop_proof(k, "POST", u.replace("execute", "authorize"), s),
    "stale iat": lambda s, k, u: dpop_proof(k, "POST", u, s, iat=int(time.time()) - 300),
    "future iat": lambda s, k, u: dpop_proof(k, "POST", u, s, iat=int(time.time()) + 300),
    "key not matching cnf.jkt": lambda s, k, u: dpop_proof(OTHER_KEY, "POST", u, s),
    "jwk of the bound key, signed by another": lambda s, k, u: dpop_proof(
        k, "POST", u, s, signing_key=OTHER_KEY.private
    ),
    "missing ath": lambda s, k, u: dpop_proof(k, "POST", u, None),
    "ath of another token": lambda s, k, u: dpop_proof(k, "POST", u, s + "x"),
    "missing jti": lambda s, k, u: dpop_proof(k, "POST", u, s, jti=None),
    "short jti": lambda s, k, u: dpop_proof(k, "POST", u, s, jti="abc"),
    "alg none": lambda s, k, u: _unsigned(
        k, {"htm": "POST", "htu": u, "iat": int(time.time()), "jti": uuid.uuid4().hex}
    ),
    "alg HS256": lambda s, k, u: dpop_proof(k, "POST", u, s, alg="HS256", signing_key=b"k" * 32),
    "typ jwt": lambda s, k, u: dpop_proof(k, "POST", u, s, headers={"typ": "JWT"}),
    "no jwk": lambda s, k, u: dpop_proof(k, "POST", u, s, headers={"jwk": None}),
    "private jwk": lambda s, k, u: dpop_proof(
        k, "POST", u, s, headers={"jwk": {**k.jwk, "d": "AAAA"}}
    ),
    "not a JWS": lambda s, k, u: "not.a.jws",
}


#: Refused by the gateway before it forwards anything (not a DPoP JWS of an accepted alg):
#: the token is not used, so a client learns what is wrong without losing it.
EARLY = {"alg none", "alg HS256", "typ jwt"}


@pytest.mark.parametrize("name", sorted(ATTACKS))
async def test_refused_dpop_proofs_use_the_token_up(http: HttpAgent, name: str) -> None:
    sub = f"gw-dpop-{name.replace(' ', '-').replace('.', '')}"
    session = http.session(sub, "billing")
    grant = (await http.authorize(session, TOOL, {})).json()
    url = f"{http.base}/v1/execute"
    proof = ATTACKS[name](session, http.key_of(session), url)
    r = await http.execute(session, grant, TOOL, {}, dpop=proof)
    assert r.status_code == 422 and error_of(r) == "validation_failed", (name, r.text)
    assert session not in r.text
    again = await http.execute(session, grant, TOOL, {})  # a good proof, too late
    if name in EARLY:
        assert again.status_code == 200, again.text
    else:
        assert again.status_code == 409 and error_of(again) == "invalid_transaction", r.text


async def test_replayed_jti_is_refused(http: HttpAgent) -> None:
    session = http.session("gw-dpop-replay", "billing")
    url = f"{http.base}/v1/execute"
    proof = dpop_proof(http.key_of(session), "POST", url, session)
    first = (await http.authorize(session, TOOL, {})).json()
    assert (await http.execute(session, first, TOOL, {}, dpop=proof)).status_code == 200
    second = (await http.authorize(session, TOOL, {})).json()
    r = await http.execute(session, second, TOOL, {}, dpop=proof)
    assert r.status_code == 422 and error_of(r) == "validation_failed"
    assert "jti" in r.json()["error"]["message"]


async def test_htu_is_compared_normalized_without_query(http: HttpAgent) -> None:
    session = http.session("gw-dpop-norm", "billing")
    grant = (await http.authorize(session, TOOL, {})).json()
    htu = f"{http.base.replace('http://', 'HTTP://')}/v1/execute?x=1#frag"
    proof = dpop_proof(http.key_of(session), "POST", htu, session)
    r = await http.execute(session, grant, TOOL, {}, dpop=proof)
    assert r.status_code == 200, r.text


async def test_a_proof_made_with_joserfc(http: HttpAgent, stack: Stack) -> None:
    """An independent JOSE library (joserfc), a P-256 key, ES256, the DPoP scheme."""
    key = ECKey.generate_key("P-256")
    session = mint_session(stack.home, "gw-dpop-jose", roles=["billing"], jkt=key.thumbprint())
    grant = (await http.authorize(session, TOOL, {})).json()
    url = f"{http.base}/v1/execute"
    header = {"typ": "dpop+jwt", "alg": "ES256", "jwk": key.as_dict(private=False)}
    ath = jwt.utils.base64url_encode(hashlib.sha256(session.encode()).digest())
    claims = {
        "htm": "POST",
        "htu": url,
        "iat": int(time.time()),
        "jti": uuid.uuid4().hex,
        "ath": ath.decode(),
    }
    proof = jose_jwt.encode(header, claims, key)
    r = await http.execute(session, grant, TOOL, {}, dpop=proof)
    assert r.status_code == 200, r.text


async def test_the_gateway_cannot_skip_the_proof(stack: Stack) -> None:
    """Even as the gateway's own NATS identity, an execute without a proof, or with a
    DPoP proof for another URI than the one named, is refused by the execute worker."""
    key = AgentKey()
    session = mint_session(stack.home, "gw-dpop-direct", roles=["billing"], jkt=key.thumbprint)
    async with connected(stack) as agent, connected(stack, "gateway") as gw:
        for headers in (
            {},
            {
                "DPoP": dpop_proof(key, "POST", "https://a.example/v1/execute", session),
                "Handshake-DPoP-Htu": "https://b.example/v1/execute",
            },
            {"DPoP": dpop_proof(key, "POST", "https://a.example/v1/execute", session)},
        ):
            grant = (await agent.authorize(session, TOOL, {})).body
            body = {"transaction_id": grant["transaction_id"], "tool": TOOL, "params": {}}
            r = await gw.request(
                gw.s.execute,
                body,
                session,
                {"Handshake-Transaction-Token": grant["token"], **headers},
            )
            assert r.error == "validation_failed", r.body


async def test_a_forged_htu_over_nats_is_refused(stack: Stack) -> None:
    """Handshake-DPoP-Htu is the gateway's word only: from an agent on NATS (no tag, a
    made-up tag, a tag under another key), a proof for a phishing site's URI is refused
    and the token used up. From the gateway identity without the gateway key, likewise."""
    key = AgentKey()
    session = mint_session(stack.home, "gw-dpop-nats", roles=["billing"], jkt=key.thumbprint)
    url = "https://phish.example/v1/execute"
    proof = dpop_proof(key, "POST", url, session)
    tags: list[dict[str, str]] = [
        {},
        {"Handshake-DPoP-Htu-Tag": "x" * 43},
        {"Handshake-DPoP-Htu-Tag": GatewayKey(b"k" * 32).tag(url, proof)},
    ]
    async with connected(stack) as agent, connected(stack, "gateway") as gw:
        for sender, tag in [(agent, t) for t in tags] + [(gw, tags[0])]:
            grant = (await agent.authorize(session, TOOL, {})).body
            body = {"transaction_id": grant["transaction_id"], "tool": TOOL, "params": {}}
            headers = {"Handshake-Transaction-Token": grant["token"], "DPoP": proof,
                       "Handshake-DPoP-Htu": url, **tag}  # fmt: skip
            r = await sender.request(sender.s.execute, body, session, headers)
            assert r.error == "validation_failed", r.body
            assert "honoured only from the gateway" in r.body["error"]["message"]
            # the token is used up: a good proof cannot follow
            good = key.proof(grant["transaction_id"], TOOL, grant["params_hash"])
            headers = {"Handshake-Transaction-Token": grant["token"], "Handshake-Proof": good}
            r = await agent.request(agent.s.execute, body, session, headers)
            assert r.error == "invalid_transaction", r.body


async def test_a_spoofed_host_at_the_gateway_is_refused(http: HttpAgent) -> None:
    """The gateway names its configured URL as htu, never the request's Host or
    X-Forwarded-*: a proof made for the Host an attacker chose is refused."""
    spoofs = [{"Host": "evil.example"},
              {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "evil.example"}]  # fmt: skip
    for n, spoof in enumerate(spoofs):
        session = http.session(f"gw-dpop-host{n}", "billing")
        for htu in ("http://evil.example/v1/execute", "https://evil.example/v1/execute"):
            grant = (await http.authorize(session, TOOL, {})).json()
            proof = dpop_proof(http.key_of(session), "POST", htu, session)
            r = await http.execute(session, grant, TOOL, {}, dpop=proof, headers=spoof)
            assert r.status_code == 422 and error_of(r) == "validation_failed", r.text
            assert "another URI" in r.text


def _ath(session: str) -> str:
    return jwt.utils.base64url_encode(hashlib.sha256(session.encode()).digest()).decode()


async def test_an_ed25519_alg_proof_made_with_joserfc(http: HttpAgent, stack: Stack) -> None:
    """RFC 9864's ``alg: "Ed25519"`` (what panva's dpop sends) is accepted as EdDSA;
    ``Ed25519`` over an Ed448 key is not."""
    key = OKPKey.generate_key("Ed25519")
    session = mint_session(stack.home, "gw-dpop-ed25519", roles=["billing"], jkt=key.thumbprint())
    grant = (await http.authorize(session, TOOL, {})).json()
    header = {"typ": "dpop+jwt", "alg": "Ed25519", "jwk": key.as_dict(private=False)}
    claims = {"htm": "POST", "htu": f"{http.base}/v1/execute", "iat": int(time.time()),
              "jti": uuid.uuid4().hex, "ath": _ath(session)}  # fmt: skip
    proof = jose_jwt.encode(header, claims, key, algorithms=["Ed25519"])
    assert json.loads(jwt.utils.base64url_decode(proof.split(".")[0]))["alg"] == "Ed25519"
    r = await http.execute(session, grant, TOOL, {}, dpop=proof)
    assert r.status_code == 200, r.text

    other = OKPKey.generate_key("Ed448")
    session = mint_session(stack.home, "gw-dpop-ed448", roles=["billing"], jkt=other.thumbprint())
    grant = (await http.authorize(session, TOOL, {})).json()
    header = {"typ": "dpop+jwt", "alg": "Ed25519", "jwk": other.as_dict(private=False)}
    claims = {**claims, "jti": uuid.uuid4().hex, "ath": _ath(session)}
    signed = jose_jwt.encode({**header, "alg": "Ed448"}, claims, other, algorithms=["Ed448"])
    relabelled = jwt.utils.base64url_encode(json.dumps(header).encode()).decode()
    r = await http.execute(
        session, grant, TOOL, {}, dpop=".".join([relabelled, *signed.split(".")[1:]])
    )
    assert r.status_code == 422 and error_of(r) == "validation_failed", r.text


@pytest.mark.parametrize(
    ("uri", "normalized"),
    [
        ("HTTPS://Gw.Example.COM:443/v1/execute?x=1#f", "https://gw.example.com/v1/execute"),
        ("http://127.0.0.1:8080/v1/execute", "http://127.0.0.1:8080/v1/execute"),
        ("http://[::1]:80/v1/execute", "http://[::1]/v1/execute"),
        ("http://gw.example", "http://gw.example/"),
        ("ftp://gw.example/v1/execute", None),
        ("http://user:pw@gw.example/v1/execute", None),
        ("/v1/execute", None),
        ("http://gw.example:99999/v1/execute", None),
    ],
)
def test_htu_normalization(uri: str, normalized: str | None) -> None:
    assert normalize_htu(uri) == normalized


def test_nonces(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        NonceIssuer(b"short")
    issuer, other = NonceIssuer(b"a" * 32), NonceIssuer(b"b" * 32)
    nonce = issuer.issue()
    assert issuer.valid(nonce) and not other.valid(nonce)
    for bad in (None, 5, "", "x" * 200, nonce + "x", "." + nonce.split(".")[1]):
        assert not issuer.valid(bad), bad
    later = time.time() + NONCE_TTL_S + 1
    monkeypatch.setattr(time, "time", lambda: later)
    assert not issuer.valid(nonce)
