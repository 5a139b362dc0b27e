"""Confidential tier: param and AST checks refuse known-bad input; results are masked."""

from __future__ import annotations

import pytest

from tests.conftest import Raw

BAD_CUSTOMER_IDS = {
    "sql injection": "cus_12345678' OR '1'='1",
    "sql comment": "cus_12345678;--",
    "path traversal": "../../etc/passwd",
    "encoded traversal": "cus_12345678%2e%2e%2fadmin",
    "traversal inside": "cus_12345678/../../admin",
    "oversized": "cus_" + "a" * 200,
    "fullwidth letters": "\uff43\uff55\uff53_12345678",
    "zero-width space": "cus_1234\u200b5678",
    "right-to-left override": "cus_\u202e87654321",
    "cyrillic look-alike": "cu\u0455_12345678",
    "null byte": "cus_12345678\x00",
    "newline": "cus_12345678\n",
    "template injection": "{{7*7}}",
    "shell": "$(id)",
}

AST_ESCAPES = {
    "import": "__import__('os').system('id')",
    "attribute": "amount.__class__",
    "dunder name": "__builtins__",
    "lambda": "(lambda: 1)()",
    "list comprehension": "[x for x in amount]",
    "generator": "sum(x for x in amount)",
    "dict comprehension": "{x: 1 for x in amount}",
    "call outside the allow-list": "open('/etc/passwd')",
    "eval": "eval('1')",
    "subscript": "amount[0]",
    "keyword argument": "sum(amount, start=1)",
    "conditional": "sum(amount) if 1 else 0",
    "string constant": "'a' * 10",
    "walrus": "(x := 1)",
    "unknown field": "sum(card_number)",
    "bare function": "sum",
    "nested call": "sum(max(amount))",
    "syntax error": "sum(amount",
    "too long": "+".join(["amount"] * 80),
}


@pytest.mark.parametrize("name", sorted(BAD_CUSTOMER_IDS))
async def test_bad_customer_ids_are_refused_before_the_target(raw: Raw, name: str) -> None:
    carol = raw.session("carol", "support")
    before = await raw.target_stats()
    r = await raw.authorize(
        carol, "customers.get_customer", {"customer_id": BAD_CUSTOMER_IDS[name]}
    )
    assert r.error == "validation_failed", (name, r.body)
    assert BAD_CUSTOMER_IDS[name] not in r.body["error"]["message"]
    assert (await raw.target_stats())["calls"] == before["calls"]


@pytest.mark.parametrize("name", sorted(AST_ESCAPES))
async def test_ast_escapes_are_refused(raw: Raw, name: str) -> None:
    dan = raw.session("dan", "analyst")
    before = await raw.target_stats()
    r = await raw.authorize(dan, "reports.run_query", {"expression": AST_ESCAPES[name]})
    assert r.error == "validation_failed", (name, r.body)
    assert (await raw.target_stats())["calls"] == before["calls"]


@pytest.mark.parametrize(
    "expression", ["sum(amount) / count()", "avg(amount)", "max(amount) - min(amount)", "-1 + 2"]
)
async def test_aggregate_expressions_run(raw: Raw, expression: str) -> None:
    dan = raw.session("dan", "analyst")
    g = (await raw.authorize(dan, "reports.run_query", {"expression": expression})).body
    r = await raw.execute(dan, g, "reports.run_query", {"expression": expression})
    assert r.error is None, r.body
    assert isinstance(r.body["result"]["value"], float)


async def test_customer_record_is_masked_and_the_receipt_covers_the_mask(raw: Raw) -> None:
    carol = raw.session("carol", "support")
    params = {"customer_id": "cus_8f3k2m9q"}
    g = (await raw.authorize(carol, "customers.get_customer", params)).body
    assert g["tier"] == "confidential"
    r = await raw.execute(carol, g, "customers.get_customer", params)
    assert r.error is None, r.body
    customer = r.body["result"]
    assert customer["email"] == "j***@example.com"
    assert customer["card_number"] == "************4242"
    assert customer["national_id"] == "[redacted]"
    assert customer["name"] == "Jane Doe"
    raw_text = str(r.body)
    for secret in ("jane.doe@example.com", "4242424242424242", "123-45-6789"):
        assert secret not in raw_text
    import hashlib

    import jwt
    import rfc8785

    claims = jwt.decode(r.body["receipt"], options={"verify_signature": False})
    assert claims["rh"] == "sha256:" + hashlib.sha256(rfc8785.dumps(customer)).hexdigest()
