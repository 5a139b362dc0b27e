"""The gateway's OpenAPI document: generated from the wire Structs, served as is, and a
property-based run driven by it (schemathesis) against the live gateway: no 5xx, every
response conforms to the document."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import msgspec
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012
from schemathesis import BaseSchema, GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from mcp_handshake.services.dev.devhome import mint_session
from mcp_handshake.services.dev.devstack import Stack
from mcp_handshake.services.gateway.openapi import openapi_document
from mcp_handshake.shared.errors import ERRORS_BY_CODE
from mcp_handshake.shared.wire import ErrorReply, Grant
from tests.support.http_agent import gateway_url

__all__ = ["gateway_url"]

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


def _without_added_enums(got: Any, want: Any) -> Any:
    """``got`` without the ``enum`` members that ``want`` does not have."""
    if isinstance(got, dict) and isinstance(want, dict):
        return {k: _without_added_enums(v, want.get(k)) for k, v in got.items()
                if k != "enum" or "enum" in want}  # fmt: skip
    if isinstance(got, list) and isinstance(want, list) and len(got) == len(want):
        return [_without_added_enums(g, w) for g, w in zip(got, want, strict=True)]
    return got


def test_document_is_generated_from_the_wire_types() -> None:
    doc = json.loads(openapi_document())
    assert doc["openapi"].startswith("3.1")
    schemas = doc["components"]["schemas"]
    _, expected = msgspec.json.schema_components(
        (Grant, ErrorReply), ref_template="#/components/schemas/{name}"
    )
    for name, schema in expected.items():  # as generated, but for the closed sets added
        assert _without_added_enums(schemas[name], schema) == schema, name
    assert set(doc["paths"]) == {
        "/v1/authorize",
        "/v1/execute",
        "/v1/reconcile",
        "/v1/tools",
        "/v1/status/{txn}",
        "/v1/keys",
        "/v1/approvals",
        "/v1/approvals/{txn}/decide",
        "/v1/authorize/batch",
        "/v1/execute/batch",
    }
    for item in doc["paths"].values():
        for op in item.values():
            for status, response in op["responses"].items():
                ref = response["content"]["application/json"]["schema"]["$ref"]
                if int(status) >= 400:
                    assert ref.endswith("/ErrorReply"), (op["operationId"], status)


def test_documented_headers_are_the_ones_each_route_takes() -> None:
    """Reconcile takes the session and a Handshake-Proof, not the transaction token."""
    paths = json.loads(openapi_document())["paths"]
    headers = {
        path: {p["name"] for p in op.get("parameters", []) if p["in"] == "header"}
        for path, item in paths.items()
        for op in item.values()
    }
    assert headers["/v1/reconcile"] == {"Handshake-Proof"}
    assert headers["/v1/execute"] == {"Handshake-Transaction-Token", "DPoP", "Handshake-Proof"}
    # a batch's tokens are in its body; its proof is a DPoP proof or a batch proof
    assert headers["/v1/execute/batch"] == {"DPoP", "Handshake-Proof"}
    assert headers["/v1/authorize/batch"] == set()


def test_batch_results_are_the_single_routes_bodies_or_errors() -> None:
    doc = json.loads(openapi_document())
    schemas = doc["components"]["schemas"]
    # with "receipts": "merkle", an execute's result carries its inclusion, not a receipt
    execute = ["ExecuteReply", "MerkleExecuteReply"]
    for path, replies in (("/v1/authorize/batch", ["Grant"]), ("/v1/execute/batch", execute)):
        ok = doc["paths"][path]["post"]["responses"]["200"]["content"]["application/json"]
        name = ok["schema"]["$ref"].rsplit("/", 1)[1]
        items = schemas[name]["properties"]["results"]["items"]["oneOf"]
        assert [i["$ref"].rsplit("/", 1)[1] for i in items] == [*replies, "ErrorReply"]
    merkle = schemas["ExecuteBatchReply"]["properties"]["batch_receipt"]
    assert merkle["type"] == "string"
    assert schemas["BatchExecuteRequest"]["properties"]["receipts"]["enum"] == ["merkle", "single"]
    assert schemas["Inclusion"]["required"] == ["index", "path", "leaf"]
    op = schemas["BatchExecuteRequest"]["properties"]["ops"]["items"]["$ref"].rsplit("/", 1)[1]
    assert schemas[op]["required"] == ["transaction_id", "tool", "params", "token"]
    execute = doc["paths"]["/v1/execute/batch"]["post"]
    assert {"session": [], "dpop": []} in execute["security"]


def test_closed_sets_are_enums() -> None:
    schemas = json.loads(openapi_document())["components"]["schemas"]

    def enum(name: str, prop: str) -> list[str]:
        schema = schemas[name]["properties"][prop]
        (values,) = [m["enum"] for m in [schema, *schema.get("anyOf", [])] if "enum" in m]
        return list(values)

    tiers = ["public", "internal", "confidential", "restricted"]
    for name in ("Grant", "ExecuteReply", "ToolInfo", "PendingApproval", "DecideReply"):
        assert enum(name, "tier") == tiers, name
    assert enum("Grant", "status") == ["granted", "pending_approval"]
    assert {"approved", "executed", "outcome_unknown"} <= set(enum("StatusReply", "status"))
    assert enum("DecideReply", "status") == ["approved", "denied", "pending_approval"]
    codes = set(enum("ErrorDetail", "code"))
    assert {"use_dpop_nonce", "validation_failed", "not_found", "request_timeout"} <= codes
    assert set(ERRORS_BY_CODE) <= codes


def test_dpop_is_a_security_scheme_of_its_own() -> None:
    doc = json.loads(openapi_document("https://gw.example"))
    assert doc["servers"] == [{"url": "https://gw.example"}]
    dpop = doc["components"]["securitySchemes"]["dpop"]
    assert dpop["type"] == "apiKey" and dpop["in"] == "header" and dpop["name"] == "DPoP"
    execute = doc["paths"]["/v1/execute"]["post"]
    assert {"session": [], "dpop": []} in execute["security"]
    assert "servers" not in json.loads(openapi_document())


def test_every_operation_has_examples_that_match_its_schemas() -> None:
    """A request example where there is a body, a success and an error example; each
    valid against the schema it illustrates."""
    doc = json.loads(openapi_document())
    registry = Registry().with_resource("urn:gw", Resource.from_contents(doc, DRAFT202012))
    for item in doc["paths"].values():
        for op in item.values():
            media = [r["content"]["application/json"] for r in op["responses"].values()]
            if "requestBody" in op:
                media.append(op["requestBody"]["content"]["application/json"])
            for m in media:
                assert "example" in m, op["operationId"]
                schema = {"$ref": "urn:gw" + m["schema"]["$ref"]}
                validator = Draft202012Validator(schema, registry=registry)
                errors = [e.message for e in validator.iter_errors(m["example"])]
                assert not errors, (op["operationId"], errors)


def test_served_document_and_offline_docs(gateway_url: str) -> None:
    with httpx.Client(base_url=gateway_url, timeout=10) as client:
        r = client.get("/openapi.json")
        assert r.status_code == 200 and r.headers["content-type"] == "application/json"
        assert r.content == openapi_document(gateway_url)
        assert json.loads(r.content)["servers"] == [{"url": gateway_url}]
        page = client.get("/docs")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        text = page.text
        assert "/openapi.json" in text
        assert "<script src" not in text and "http://" not in text and "https://" not in text
        assert "default-src 'none'" in page.headers["Content-Security-Policy"]


#: (operation, mode): operations without inputs have no negative data.
RUNS = [
    (op, GenerationMode.POSITIVE)
    for op in (
        "authorize",
        "execute",
        "reconcile",
        "tools",
        "status",
        "keys",
        "list_approvals",
        "decide",
        "authorize_batch",
        "execute_batch",
    )
]
RUNS += [
    (op, GenerationMode.NEGATIVE)
    for op in ("authorize", "execute", "status", "decide", "authorize_batch", "execute_batch")
]


@pytest.fixture(scope="module")
def api_schema(gateway_url: str) -> Iterator[BaseSchema]:
    yield schemathesis.openapi.from_url(f"{gateway_url}/openapi.json")


@pytest.mark.parametrize(("operation", "mode"), RUNS)
def test_property_based_run_from_the_document(
    api_schema: BaseSchema, stack: Stack, operation: str, mode: GenerationMode
) -> None:
    """Bounded examples per operation and mode (data the document allows, and data it
    does not), with a valid session so that requests get past it."""
    session = mint_session(
        stack.home, "gw-schemathesis", roles=["billing", "support", "treasury", "approver"]
    )
    op = api_schema.find_operation_by_id(operation)
    seen: set[int] = set()

    @given(case=op.as_strategy(generation_mode=mode))
    @settings(
        max_examples=15, deadline=None, database=None, suppress_health_check=list(HealthCheck)
    )
    def run(case: schemathesis.Case) -> None:
        headers = dict(case.headers or {})
        headers.setdefault("Authorization", f"Bearer {session}")
        response = case.call_and_validate(headers=headers, checks=CHECKS, timeout=30)
        seen.add(response.status_code)

    run()
    assert seen and max(seen) < 500, seen


def test_the_checks_catch_a_response_the_document_does_not_allow(gateway_url: str) -> None:
    """The run above can fail: with 401 left out of the document, a request without a
    session is caught."""
    doc = json.loads(openapi_document())
    del doc["paths"]["/v1/tools"]["get"]["responses"]["401"]
    case = schemathesis.openapi.from_dict(doc).find_operation_by_id("tools").Case()
    with pytest.raises(BaseExceptionGroup) as caught:
        case.call_and_validate(base_url=gateway_url, checks=CHECKS, timeout=10)
    assert any("Undocumented status code" in str(e) for e in caught.value.exceptions)
