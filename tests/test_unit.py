"""Pure unit tests: hashing, tokens, tools, policy, the session verifier, the endpoint wrapper."""

from __future__ import annotations

import base64
import hashlib
import json
import time
from pathlib import Path
from typing import Any

import jwt
import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from mcp_handshake.services.core.config import SessionConfig, load_config
from mcp_handshake.services.core.policy import Caller
from mcp_handshake.services.core.sessions import SessionVerifier
from mcp_handshake.services.core.tools import ToolRegistry
from mcp_handshake.services.dev.demo.tools import TOOLS
from mcp_handshake.services.policy import load_policy
from mcp_handshake.services.runtime.endpoint import Endpoint, Request
from mcp_handshake.shared.errors import (
    ERRORS_BY_CODE,
    HandshakeError,
    InvalidParams,
    Unauthenticated,
)
from mcp_handshake.shared.hashing import new_token, params_hash, token_hash
from mcp_handshake.shared.keys import generate_private_key, jwk_thumbprint, public_jwk
from mcp_handshake.shared.wire import AuthorizeRequest, Grant

DEMO = Path(__file__).resolve().parent.parent / "services/mcp_handshake/services/dev/demo"


def test_params_hash_is_jcs_sha256() -> None:
    # RFC 8785: keys sorted, no whitespace, numbers in ES6 form
    assert (
        params_hash({"b": 1.0, "a": "x"})
        == "sha256:" + hashlib.sha256(b'{"a":"x","b":1}').hexdigest()
    )


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53) + 1, 2**53 - 1) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)


@given(st.dictionaries(st.text(max_size=8), json_values, max_size=6))
def test_params_hash_ignores_key_order(params: dict[str, Any]) -> None:
    shuffled = dict(reversed(list(params.items())))
    assert params_hash(params) == params_hash(shuffled)


def test_unhashable_numbers_are_invalid_params() -> None:
    for value in (2**53, -(2**53), float("nan"), float("inf")):
        with pytest.raises(InvalidParams):
            params_hash({"n": value})


def test_tokens_are_32_random_bytes_and_hashed() -> None:
    tokens = {new_token() for _ in range(1000)}
    assert len(tokens) == 1000
    t = next(iter(tokens))
    assert len(base64.urlsafe_b64decode(t + "=")) == 32
    assert token_hash(t) == hashlib.sha256(t.encode()).hexdigest() and t not in token_hash(t)


@given(
    st.sampled_from([t for t in TOOLS if t.name == "payments.create_invoice"]),
    st.decimals(min_value="0.01", max_value="99999", places=2),
    st.sampled_from(["EUR", "USD"]),
    st.none() | st.text(max_size=200),
)
def test_normalization_is_idempotent(tool: Any, amount: Any, currency: str, memo: Any) -> None:
    raw = {"customer_id": "cus_8f3k2m9q", "amount": str(amount), "currency": currency}
    if memo is not None:
        raw["memo"] = memo
    once = tool.normalize(raw)
    assert tool.normalize(once) == once
    assert params_hash(tool.normalize(once)) == params_hash(once)


def test_invalid_params_message_never_echoes_values() -> None:
    reg = ToolRegistry(TOOLS)
    with pytest.raises(InvalidParams) as info:
        reg.get("payments.get_exchange_rate").normalize({"base": "SECRETVALUE", "quote": 1})
    assert "SECRETVALUE" not in info.value.message and "base" in info.value.message


def test_policy_allows_by_role_scope_or_anyone() -> None:
    policy = load_policy(DEMO / "policy.cedar", TOOLS)
    alice = Caller("alice", frozenset({"billing"}), frozenset())
    nobody = Caller("eve", frozenset(), frozenset())
    assert policy.listable(alice, "payments.create_invoice")
    assert not policy.listable(alice, "payments.send_payment")
    assert policy.listable(nobody, "payments.get_exchange_rate")
    assert not policy.listable(nobody, "payments.list_invoices")
    assert not policy.listable(alice, "not.in.policy")


def test_config_rejects_unknown_settings(tmp_path: Path) -> None:
    cfg = tmp_path / "handshake.toml"
    cfg.write_text('[session]\nissuer = "i"\naudience = "a"\njwks_file = "k"\ntypo = 1\n')
    with pytest.raises(ValueError, match="typo"):
        load_config(cfg)
    cfg.write_text('[session]\nissuer = "i"\naudience = "a"\nleeway_s = 300\njwks_file = "k"\n')
    with pytest.raises(ValueError):
        load_config(cfg)


def test_error_tree_matches_protocol_table() -> None:
    table = {
        "bad_request": 400,
        "unauthenticated": 401,
        "forbidden": 403,
        "unknown_tool": 404,
        "invalid_transaction": 409,
        "approval_pending": 409,
        "approval_denied": 403,
        "payload_too_large": 413,
        "invalid_params": 422,
        "validation_failed": 422,
        "rate_limited": 429,
        "internal": 500,
        "target_error": 502,
        "unavailable": 503,
        "outcome_unknown": 504,
    }
    assert {c: cls.status for c, cls in ERRORS_BY_CODE.items()} == table
    retryable = {c for c, cls in ERRORS_BY_CODE.items() if cls.retryable}
    assert retryable == {"approval_pending", "rate_limited", "unavailable"}
    assert all(issubclass(cls, HandshakeError) for cls in ERRORS_BY_CODE.values())


def test_thumbprint_matches_rfc7638_example() -> None:
    # RFC 7638 section 3.1
    jwk = {
        "kty": "RSA",
        "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6"
        "tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65"
        "YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdk"
        "t-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDK"
        "gw",
        "e": "AQAB",
        "alg": "RS256",
        "kid": "2011-04-29",
    }
    assert jwk_thumbprint(jwk) == "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"


def _verifier() -> tuple[SessionVerifier, Any]:
    key = generate_private_key()
    cfg = SessionConfig(issuer="iss", audience="aud", jwks_file="x", leeway_s=0)
    return SessionVerifier(cfg, {"keys": [public_jwk(key)]}), key


def test_verifier_accepts_a_good_session() -> None:
    v, key = _verifier()
    now = int(time.time())
    tok = jwt.encode(
        {
            "iss": "iss",
            "aud": "aud",
            "sub": "alice",
            "iat": now,
            "exp": now + 60,
            "roles": ["a", "b"],
            "scope": "x y",
            "cnf": {"jkt": "T"},
            "groups": ["finance"],
        },
        key,
        algorithm="EdDSA",
        headers={"kid": public_jwk(key)["kid"]},
    )
    caller = v.verify(f"Bearer {tok}")
    assert caller == Caller("alice", frozenset({"a", "b"}), frozenset({"x", "y"}), "T",
                            groups=frozenset({"finance"}))  # fmt: skip


def test_verifier_refuses_oversized_before_parsing() -> None:
    v, _ = _verifier()
    with pytest.raises(Unauthenticated, match="too large"):
        v.verify("Bearer " + "a" * 9000)


async def test_endpoint_maps_errors_without_leaking() -> None:
    async def boom(req: Request[Any]) -> Grant:
        raise RuntimeError("secret internal detail")

    ep = Endpoint("t", "t", "q", AuthorizeRequest, boom, max_payload=100)

    class Msg:
        data = json.dumps({"tool": "x", "params": {}}).encode()
        headers = None
        reply = ""
        subject = "t"

    await ep._serve(Msg())  # type: ignore[arg-type]
    assert ep.stats.outcomes["internal"] == 1
    with pytest.raises(msgspec.ValidationError):
        msgspec.json.decode(b'{"tool": "x", "params": {}, "z": 1}', type=AuthorizeRequest)


def test_masks() -> None:
    from mcp_handshake.services.core.masking import apply_masks

    data = {
        "email": "jane.doe@example.com",
        "card": "4242424242424242",
        "id": "123-45-6789",
        "rows": [{"email": "a@b.c"}, {"email": None}],
        "nested": {"x": {"acct": "acct_4f9d2a"}},
    }
    out = apply_masks(
        data,
        {
            "email": "email",
            "card": "last4",
            "id": "full",
            "rows.*.email": "email",
            "nested.*.acct": "partial",
            "missing.path": "full",
        },
    )
    assert out == {
        "email": "j***@example.com",
        "card": "************4242",
        "id": "[redacted]",
        "rows": [{"email": "a***@b.c"}, {"email": None}],
        "nested": {"x": {"acct": "ac***"}},
    }
    assert data["email"] == "jane.doe@example.com"  # the input is not changed


def test_safe_text_allows_ordinary_text() -> None:
    from mcp_handshake.services.core.checks import safe_text

    for ok in ("October consulting", "Café Müller, 2nd floor", "50% off", "a.b/c"):
        safe_text("memo", ok)


def test_approvers_always_see_the_effect_in_full() -> None:
    """A tool that would mask a param of its effect for approvers is refused at load."""
    from pydantic import BaseModel, ConfigDict

    from mcp_handshake.services.core.tools import HttpOperation, Tier, Tool

    class Pay(BaseModel):
        model_config = ConfigDict(extra="forbid")
        to_account: str
        amount: float

    op = HttpOperation("POST", "/pay", body=("to_account", "amount"))
    effect = ("to_account", "amount")
    hiding = Tool("t.pay", "pay", Pay, Tier.RESTRICTED, "x", op,
                  preview_mask={"to_account": "last4"}, effect=effect)  # fmt: skip
    with pytest.raises(ValueError, match="in full"):
        ToolRegistry([hiding])
    showing = Tool("t.pay", "pay", Pay, Tier.RESTRICTED, "x", op, effect=effect)
    assert len(ToolRegistry([showing])) == 1
