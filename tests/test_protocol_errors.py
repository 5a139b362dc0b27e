"""Every protocol error this deployment can produce, reached with raw nats-py requests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from mcp_handshake.shared.nesting import MAX_DEPTH, depth, too_deep
from tests.conftest import Raw, connected

RATE = {"base": "EUR", "quote": "USD"}


def _assert_error(reply, code: str, status: str) -> None:  # type: ignore[no-untyped-def]
    assert reply.error == code, reply.body
    assert reply.status == status
    err = reply.body["error"]
    assert set(err) >= {"code", "message", "transaction_id", "retryable"}
    assert err["code"] == code
    assert isinstance(err["message"], str) and err["message"]
    assert "Traceback" not in err["message"]


async def test_authorize_grant_shape(raw: Raw) -> None:
    alice = raw.session("alice", "billing")
    r = await raw.authorize(alice, "payments.get_exchange_rate", RATE)
    assert r.error is None, r.body
    g = r.body
    assert set(g) == {"transaction_id", "token", "status", "tier", "params_hash", "expires_at"}
    assert g["status"] == "granted" and g["tier"] == "public"
    assert g["params_hash"].startswith("sha256:") and len(g["params_hash"]) == 7 + 64
    assert len(g["token"]) == 43  # base64url of 32 bytes, unpadded


async def test_malformed_json_is_bad_request(raw: Raw) -> None:
    alice = raw.session("alice", "billing")
    for body in (b"{not json", b"[1,2]", b"\xff\xfe", b'"str"'):
        r = await raw.request(raw.s.authorize, body, alice)
        _assert_error(r, "bad_request", "400")
    # and the worker keeps serving
    assert (await raw.authorize(alice, "payments.get_exchange_rate", RATE)).error is None


def _nested(levels: int) -> bytes:
    """An authorize body nesting ``levels`` arrays inside its params (depth levels + 2)."""
    return b'{"tool":"test.echo","params":{"text":' + b"[" * levels + b"]" * levels + b"}}"


def _log_sizes(raw: Raw) -> dict[Path, int]:
    logs = raw.stack.logs.glob("*.log")
    return {p: p.stat().st_size for p in logs if p.stem not in {"nats-server", "redis-server"}}


def _logged_since(sizes: dict[Path, int]) -> str:
    out = []
    for path, size in sizes.items():
        with path.open("rb") as f:
            f.seek(size)
            out.append(f.read().decode(errors="replace"))
    return "\n".join(out)


#: Bodies no decoder could make sense of: depth bombs and bad UTF-8 anywhere.
UNDECODABLE = {
    "20,000 nested arrays": _nested(20_000),
    "10,000 nested objects": b'{"tool":"t","params":' + b'{"a":' * 10_000 + b"1" + b"}" * 10_001,
    "bare 20,000 nested arrays": b"[" * 20_000 + b"]" * 20_000,
    "one level too deep": _nested(MAX_DEPTH - 1),
    "a thousand levels": _nested(1000),
    "invalid UTF-8 in a value": b'{"tool":"test.echo","params":{"text":"a\xff"}}',
    "invalid UTF-8 in a key": b'{"tool":"test.echo","params":{"\xc3(":"a"}}',
    "invalid UTF-8 in the tool": b'{"tool":"test.\xe9cho","params":{}}',
    "an encoded surrogate": b'{"tool":"test.echo","params":{"text":"\xed\xa0\x80"}}',
    "an overlong encoding": b'{"tool":"test.echo","params":{"text":"\xc0\xaf"}}',
    "beyond U+10FFFF": b'{"tool":"test.echo","params":{"text":"\xf4\x90\x80\x80"}}',
    "a lone surrogate escape": b'{"tool":"test.echo","params":{"text":"\\ud800"}}',
    "invalid UTF-8 outside strings": b'{"tool":"test.echo",\xff"params":{}}',
}


async def test_undecodable_bodies_are_bad_request_without_traceback(raw: Raw) -> None:
    """Agents reach the agent subjects; the executor subject is reached with the execute
    workers' identity (only they may publish there)."""
    alice = raw.session("alice", "billing")
    sizes = _log_sizes(raw)
    executor = raw.s.executor("payments")
    async with connected(raw.stack, "execute") as execute:
        for name, body in UNDECODABLE.items():
            for speaker, subject in ((raw, raw.s.authorize), (raw, raw.s.execute),
                                     (raw, raw.s.tools), (execute, executor)):  # fmt: skip
                r = await speaker.request(subject, body, alice)
                _assert_error(r, "bad_request", "400")
                assert "internal" not in r.body["error"]["message"], (name, subject)
    logged = _logged_since(sizes)
    assert "Traceback" not in logged and "unhandled" not in logged, logged[-2000:]
    # and the workers keep serving
    assert (await raw.authorize(alice, "payments.get_exchange_rate", RATE)).error is None


async def test_nesting_up_to_the_limit_is_decoded(raw: Raw) -> None:
    alice = raw.session("alice", "billing")
    at_limit = await raw.request(raw.s.authorize, _nested(MAX_DEPTH - 2), alice)
    _assert_error(at_limit, "invalid_params", "422")  # decoded; the tool refuses a list
    over = await raw.request(raw.s.authorize, _nested(MAX_DEPTH - 1), alice)
    _assert_error(over, "bad_request", "400")
    assert str(MAX_DEPTH) in over.body["error"]["message"]
    brackets = {"tool": "test.echo", "params": {"text": "[{" * 40}}  # only inside a string
    assert (await raw.request(raw.s.authorize, brackets, alice)).error is None


def _reference_depth(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max(map(_reference_depth, value.values()), default=0)
    if isinstance(value, list):
        return 1 + max(map(_reference_depth, value), default=0)
    return 0


_TEXT = st.text(alphabet=st.sampled_from(list('[]{}"\\\n\u2028é😀ab')), max_size=12)
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | _TEXT,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_TEXT, inner, max_size=4),
    max_leaves=60,
)


@given(_JSON, st.booleans())
def test_depth_scan_matches_the_decoded_depth(value: Any, ascii_only: bool) -> None:
    data = json.dumps(value, ensure_ascii=ascii_only).encode()
    assert depth(data) == _reference_depth(value)
    assert too_deep(data, 2) == (_reference_depth(value) > 2)


def test_depth_scan_edges() -> None:
    assert depth(b"{}") == 1 and depth(b"0") == 0 and depth(b'"[[["') == 0
    assert depth(rb'["\\", ["\\\"]"]]') == 2  # an escaped backslash, then an escaped quote
    assert not too_deep(b'["' + b"[" * 100 + b'"]')
    assert not too_deep(b"[" * MAX_DEPTH + b"]" * MAX_DEPTH)
    assert too_deep(b"[" * (MAX_DEPTH + 1) + b"]" * (MAX_DEPTH + 1))
    assert not too_deep(b"[" + b"[]," * 1000 + b"[]]")


async def test_unknown_fields_and_wrong_types_are_bad_request(raw: Raw) -> None:
    alice = raw.session("alice", "billing")
    bodies = [
        {"tool": "payments.get_exchange_rate", "params": RATE, "extra": 1},
        {"tool": 42, "params": RATE},
        {"tool": "payments.get_exchange_rate", "params": [1]},
        {"params": RATE},
        {"tool": "payments.get_exchange_rate", "params": RATE, "context": {"agent": 5}},
    ]
    for body in bodies:
        _assert_error(await raw.request(raw.s.authorize, body, alice), "bad_request", "400")
    exe = {"transaction_id": "x", "tool": "payments.get_exchange_rate", "params": RATE, "x": 1}
    r = await raw.request(raw.s.execute, exe, alice, {"Handshake-Transaction-Token": "t"})
    _assert_error(r, "bad_request", "400")


async def test_missing_token_header_is_bad_request(raw: Raw) -> None:
    alice = raw.session("alice", "billing")
    body = {"transaction_id": "x", "tool": "payments.get_exchange_rate", "params": RATE}
    _assert_error(await raw.request(raw.s.execute, body, alice), "bad_request", "400")


async def test_oversized_body_is_payload_too_large(raw: Raw) -> None:
    alice = raw.session("alice", "billing")
    big = json.dumps({"tool": "test.echo", "params": {"text": "x" * (70 * 1024)}}).encode()
    _assert_error(await raw.request(raw.s.authorize, big, alice), "payload_too_large", "413")
    _assert_error(await raw.request(raw.s.execute, big, alice), "payload_too_large", "413")
    assert (await raw.authorize(alice, "payments.get_exchange_rate", RATE)).error is None


async def test_missing_session_is_unauthenticated(raw: Raw) -> None:
    body = {"tool": "payments.get_exchange_rate", "params": RATE}
    _assert_error(await raw.request(raw.s.authorize, body), "unauthenticated", "401")
    _assert_error(
        await raw.request(raw.s.authorize, body, headers={"Authorization": "Basic abc"}),
        "unauthenticated",
        "401",
    )
    _assert_error(await raw.request(raw.s.tools, {}), "unauthenticated", "401")


async def test_policy_denial_is_forbidden(raw: Raw) -> None:
    alice = raw.session("alice", "billing")
    r = await raw.authorize(alice, "customers.get_customer", {"customer_id": "cus_8f3k2m9q"})
    _assert_error(r, "forbidden", "403")
    nobody = raw.session("eve")
    r = await raw.authorize(nobody, "payments.list_invoices", {})
    _assert_error(r, "forbidden", "403")


async def test_unknown_tool(raw: Raw) -> None:
    alice = raw.session("alice", "billing")
    _assert_error(await raw.authorize(alice, "payments.nope", {}), "unknown_tool", "404")


async def test_invalid_params(raw: Raw) -> None:
    alice = raw.session("alice", "billing")
    cases = [
        ("payments.get_exchange_rate", {"base": "EURO", "quote": "USD"}),
        ("payments.get_exchange_rate", {"base": "EUR"}),
        ("payments.get_exchange_rate", {**RATE, "surprise": 1}),  # never silently dropped
        ("payments.list_invoices", {"limit": 1000}),
        ("payments.create_invoice", {"customer_id": "bob", "amount": 5, "currency": "EUR"}),
        (
            "payments.create_invoice",
            {"customer_id": "cus_8f3k2m9q", "amount": -5, "currency": "EUR"},
        ),
    ]
    for tool, params in cases:
        r = await raw.authorize(alice, tool, params)
        _assert_error(r, "invalid_params", "422")
        assert "EURO" not in r.body["error"]["message"]  # values are never echoed


async def test_params_are_normalized(raw: Raw) -> None:
    alice = raw.session("alice", "billing")
    a = await raw.authorize(alice, "payments.list_invoices", {})
    b = await raw.authorize(alice, "payments.list_invoices", {"limit": "20", "status": None})
    assert a.error is None and b.error is None
    assert a.body["params_hash"] == b.body["params_hash"]


async def test_target_error_is_sanitized(raw: Raw) -> None:
    carol = raw.session("carol", "support")
    params = {"customer_id": "cus_doesnotexist"}
    g = (await raw.authorize(carol, "customers.get_customer", params)).body
    r = await raw.execute(carol, g, "customers.get_customer", params)
    _assert_error(r, "target_error", "502")
    assert r.body["error"]["transaction_id"] == g["transaction_id"]
    assert "customer_not_found" in r.body["error"]["message"]
    key = (raw.stack.home / "secrets" / "payments_api_key").read_text().strip()
    assert key not in json.dumps(r.body)


async def test_outcome_unknown_when_executor_is_late(raw: Raw) -> None:
    alice = raw.session("alice")
    params = {"seconds": 3}
    g = (await raw.authorize(alice, "test.sleep", params)).body
    r = await raw.execute(alice, g, "test.sleep", params)
    _assert_error(r, "outcome_unknown", "504")
    assert r.body["error"]["transaction_id"] == g["transaction_id"]


async def test_invalid_transaction_for_garbage_token(raw: Raw) -> None:
    alice = raw.session("alice")
    g = {"transaction_id": "00000000-0000-0000-0000-000000000000", "token": "A" * 43}
    r = await raw.execute(alice, g, "payments.get_exchange_rate", RATE)
    _assert_error(r, "invalid_transaction", "409")


async def test_tools_catalog_is_filtered_by_policy(raw: Raw) -> None:
    r = await raw.request(raw.s.tools, {}, raw.session("carol", "support"))
    names = {t["name"] for t in r.body["tools"] if not t["name"].startswith("test.")}
    assert names == {"payments.get_exchange_rate", "customers.get_customer"}
    for t in r.body["tools"]:
        assert {"name", "description", "tier", "params_schema"} <= set(t)
        assert set(t) <= {"name", "description", "tier", "params_schema", "read_only",
                          "idempotent"}  # fmt: skip
        assert t["params_schema"]["type"] == "object"
    ops = {t["name"]: t for t in r.body["tools"]}
    rate = ops["payments.get_exchange_rate"]  # GET: reads only
    assert rate["read_only"] is True and rate["idempotent"] is True
    echo = ops["test.echo"]  # an in-process function says nothing of its effect
    assert "read_only" not in echo and "idempotent" not in echo


async def test_keys_is_a_jwks(raw: Raw) -> None:
    r = await raw.request(raw.s.keys, {})
    assert r.error is None
    (key,) = r.body["keys"]
    assert key["kty"] == "OKP" and key["crv"] == "Ed25519" and "d" not in key
