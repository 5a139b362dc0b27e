"""The gateway's OpenAPI document: generated from the wire Structs, served as is, and a
property-based run driven by it (schemathesis) against the live gateway: no 5xx, every
response conforms to the document."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import msgspec
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
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


def test_document_is_generated_from_the_wire_types() -> None:
    doc = json.loads(openapi_document())
    assert doc["openapi"].startswith("3.1")
    schemas = doc["components"]["schemas"]
    _, expected = msgspec.json.schema_components(
        (Grant, ErrorReply), ref_template="#/components/schemas/{name}"
    )
    for name, schema in expected.items():
        assert schemas[name] == schema, name
    assert set(doc["paths"]) == {
        "/v1/authorize",
        "/v1/execute",
        "/v1/reconcile",
        "/v1/tools",
        "/v1/status/{txn}",
        "/v1/keys",
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


def test_served_document_and_offline_docs(gateway_url: str) -> None:
    with httpx.Client(base_url=gateway_url, timeout=10) as client:
        r = client.get("/openapi.json")
        assert r.status_code == 200 and r.headers["content-type"] == "application/json"
        assert r.content == openapi_document()
        page = client.get("/docs")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        text = page.text
        assert "/openapi.json" in text
        assert "<script src" not in text and "http://" not in text and "https://" not in text
        assert "default-src 'none'" in page.headers["Content-Security-Policy"]


#: (operation, mode): operations without inputs have no negative data.
RUNS = [
    (op, GenerationMode.POSITIVE)
    for op in ("authorize", "execute", "reconcile", "tools", "status", "keys")
]
RUNS += [(op, GenerationMode.NEGATIVE) for op in ("authorize", "execute", "status")]


@pytest.fixture(scope="module")
def api_schema(gateway_url: str) -> Iterator[BaseSchema]:
    yield schemathesis.openapi.from_url(f"{gateway_url}/openapi.json")


@pytest.mark.parametrize(("operation", "mode"), RUNS)
def test_property_based_run_from_the_document(
    api_schema: BaseSchema, stack: Stack, operation: str, mode: GenerationMode
) -> None:
    """Bounded examples per operation and mode (data the document allows, and data it
    does not), with a valid session so that requests get past it."""
    session = mint_session(stack.home, "gw-schemathesis", roles=["billing", "support", "treasury"])
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
