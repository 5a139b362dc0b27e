"""The implementation against the reference vectors in docs/vectors/.

Any client can run the same checks on the same files; these run the service's
own code: tool normalization and params hashing, session and proof
verification (at the vectors' fixed "now"), receipts with PyJWT and the JWKS.
The last test keeps the files in step with the generator.
"""

from __future__ import annotations

import importlib.util
import json
import re
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import jwt
import pytest

from mcp_handshake.services.core.config import SessionConfig
from mcp_handshake.services.core.policy import Caller
from mcp_handshake.services.core.proofs import ProofVerifier
from mcp_handshake.services.core.sessions import SessionVerifier
from mcp_handshake.services.dev.demo.tools import TOOLS
from mcp_handshake.shared.errors import InvalidParams, ValidationFailed
from mcp_handshake.shared.hashing import canonical_json, params_hash, sha256_tagged
from mcp_handshake.shared.keys import jwk_thumbprint, public_jwk
from tests.support.clock import freeze

VECTORS = Path(__file__).resolve().parent.parent / "docs" / "vectors"
TOOL = {t.name: t for t in TOOLS}


def _load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((VECTORS / name).read_text(encoding="utf-8"))
    return data


def _generator() -> Any:
    spec = importlib.util.spec_from_file_location("make_vectors", VECTORS / "make_vectors.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


KEYS = _load("keys.json")
PARAMS = _load("params.json")
SESSIONS = _load("sessions.json")
PROOFS = _load("proofs.json")
RECEIPTS = _load("receipts.json")


@pytest.fixture
def frozen_now(monkeypatch: pytest.MonkeyPatch) -> Iterator[float]:
    """The clock of PyJWT and of the verifiers stopped at the vectors' "now"."""
    yield freeze(monkeypatch, float(PROOFS["now"]))


def _describe(v: dict[str, Any]) -> str:
    return str(v.get("case") or v["description"])


# -- params ---------------------------------------------------------------------------


@pytest.mark.parametrize("v", PARAMS["params"], ids=_describe)
def test_params_normalize_and_hash(v: dict[str, Any]) -> None:
    normalized = TOOL[v["tool"]].normalize(v["params"])
    assert normalized == v["normalized"]
    assert canonical_json(normalized).decode() == v["canonical"]
    assert params_hash(normalized) == v["params_hash"]


@pytest.mark.parametrize("v", PARAMS["invalid_params"], ids=_describe)
def test_invalid_params_are_refused(v: dict[str, Any]) -> None:
    with pytest.raises(InvalidParams):
        TOOL[v["tool"]].normalize(v["params"])


@pytest.mark.parametrize("v", PARAMS["jcs"], ids=_describe)
def test_canonical_json(v: dict[str, Any]) -> None:
    assert canonical_json(v["value"]).decode() == v["canonical"]
    assert sha256_tagged(canonical_json(v["value"])) == v["sha256"]


@pytest.mark.parametrize("v", PARAMS["unhashable"], ids=_describe)
def test_unhashable_params_are_refused(v: dict[str, Any]) -> None:
    with pytest.raises(InvalidParams):
        params_hash(v["value"])


def test_published_schemas_state_the_normalized_form() -> None:
    for name, schema in PARAMS["schemas"].items():
        assert schema["x-normalized"]["required"] == list(schema["properties"]), name
        for prop, rules in schema["properties"].items():
            assert prop in schema.get("required", []) or "default" in rules, (name, prop)
    amount = PARAMS["schemas"]["payments.create_invoice"]["properties"]["amount"]
    assert amount["x-decimal-places"] == 2
    assert amount["x-normalized"]["type"] == "number"


# What a client in another language does: normalize from the published schema alone.


def _ecma_pattern(validator: Any, pattern: str, instance: Any, schema: Any) -> Iterator[Any]:
    """JSON Schema patterns are ECMA-262: ``$`` is the end of the string, where Python's
    ``re`` (which jsonschema uses) also matches before a final newline."""
    from jsonschema.exceptions import ValidationError

    if isinstance(instance, str) and not re.search(pattern.replace("$", r"\Z"), instance):
        yield ValidationError(f"does not match {pattern!r}")


def _normalize_from_schema(schema: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
    """Params normalized by the rules docs/protocol.md gives, from the schema only."""
    import jsonschema

    validator = jsonschema.validators.extend(
        jsonschema.Draft202012Validator, {"pattern": _ecma_pattern}
    )
    validator(schema).validate(params)
    out: dict[str, Any] = {}
    for name, prop in schema["properties"].items():
        value = params[name] if name in params else prop["default"]
        places = prop.get("x-decimal-places")
        if places is not None and value is not None:
            exponent = Decimal(str(value)).as_tuple().exponent
            if not isinstance(exponent, int) or -exponent > places:
                raise ValueError(f"{name}: more than {places} decimal places")
        target = prop.get("x-normalized")
        if target is not None and value is not None:
            number = Decimal(str(value))
            value = int(number) if target["type"] == "integer" else float(number)
            validator(target).validate(value)
        out[name] = value
    validator(schema["x-normalized"]).validate(out)
    return out


@pytest.mark.parametrize("v", PARAMS["params"], ids=_describe)
def test_normalization_follows_from_the_schema(v: dict[str, Any]) -> None:
    schema = PARAMS["schemas"][v["tool"]]
    assert _normalize_from_schema(schema, v["params"]) == v["normalized"]


@pytest.mark.parametrize("v", PARAMS["invalid_params"], ids=_describe)
def test_the_schema_refuses_what_is_refused(v: dict[str, Any]) -> None:
    import jsonschema

    with pytest.raises((jsonschema.ValidationError, ValueError)):
        _normalize_from_schema(PARAMS["schemas"][v["tool"]], v["params"])


# -- keys and sessions ----------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(KEYS["keys"]))
def test_key_thumbprints(name: str) -> None:
    entry = KEYS["keys"][name]
    key = jwt.PyJWK(entry["private_jwk"]).key
    assert public_jwk(key)["kid"] == entry["thumbprint"]
    assert jwk_thumbprint(entry["public_jwk"]) == entry["thumbprint"]
    assert "d" not in entry["public_jwk"]


def test_rfc_thumbprints() -> None:
    for v in KEYS["thumbprints"]:
        assert jwk_thumbprint(v["jwk"]) == v["thumbprint"]


def _session_verifier() -> SessionVerifier:
    cfg = SESSIONS["config"]
    return SessionVerifier(
        SessionConfig(issuer=cfg["issuer"], audience=cfg["audience"], jwks_file="unused",
                      algorithms=cfg["algorithms"], leeway_s=cfg["leeway_s"],
                      roles_claim=cfg["roles_claim"], scopes_claim=cfg["scopes_claim"]),
        SESSIONS["jwks"],
    )  # fmt: skip


def _caller(session: str) -> Caller:
    return _session_verifier().verify("Bearer " + SESSIONS["sessions"][session]["jwt"])


@pytest.mark.parametrize("name", sorted(SESSIONS["sessions"]))
def test_sessions(name: str, frozen_now: float) -> None:
    v = SESSIONS["sessions"][name]
    caller = _caller(name)
    want = v["caller"]
    assert (caller.sub, caller.jkt) == (want["sub"], want["jkt"])
    assert caller.roles == frozenset(want["roles"])
    assert caller.scopes == frozenset(want["scopes"])
    if v["bound_key"]:
        assert want["jkt"] == KEYS["keys"][v["bound_key"]]["thumbprint"]
    claims = jwt.decode(v["jwt"], options={"verify_signature": False})
    assert claims == v["claims"]


# -- proofs ---------------------------------------------------------------------------


class _Registry:
    """The key registry as the store keeps it: public JWKs by (sub, thumbprint)."""

    def __init__(self, entries: list[dict[str, str]]) -> None:
        self._keys = {}
        for e in entries:
            key = KEYS["keys"][e["key"]]
            self._keys[(e["sub"], key["thumbprint"])] = key["public_jwk"]

    async def lookup(self, sub: str, kid: str) -> dict[str, Any] | None:
        return self._keys.get((sub, kid))


@pytest.mark.parametrize("v", PROOFS["proofs"], ids=_describe)
async def test_proofs(v: dict[str, Any], frozen_now: float) -> None:
    head, payload, _ = v["jws"].split(".")
    assert f"{head}.{payload}" == v["signing_input"]
    assert jwt.get_unverified_header(v["jws"]) == v["header"]
    verifier = ProofVerifier(_Registry(v["registry"]))
    caller = _caller(v["session"])
    want = v["expect"]
    if v["valid"]:
        proof = await verifier.verify(v["jws"], caller, txn=want["txn"], tool=want["tool"],
                                      ph=want["ph"])  # fmt: skip
        assert proof.jti == v["claims"]["jti"]
        assert proof.thumbprint == KEYS["keys"][v["key"]]["thumbprint"]
    else:
        with pytest.raises(ValidationFailed):
            await verifier.verify(v["jws"], caller, txn=want["txn"], tool=want["tool"],
                                  ph=want["ph"])  # fmt: skip


# -- receipts -------------------------------------------------------------------------


@pytest.mark.parametrize("v", RECEIPTS["receipts"], ids=_describe)
def test_receipts(v: dict[str, Any]) -> None:
    header = jwt.get_unverified_header(v["jws"])
    assert header == v["header"]
    assert header["typ"] == "handshake-receipt+jwt"
    (jwk,) = [k for k in RECEIPTS["jwks"]["keys"] if k["kid"] == header["kid"]]
    key = jwt.PyJWK(jwk)
    claims = jwt.decode(v["jws"], key.key, algorithms=[key.algorithm_name])
    assert claims == v["claims"]
    assert claims["rh"] == v["rh"] == sha256_tagged(canonical_json(v["result"]))


def test_a_tampered_receipt_fails() -> None:
    v = RECEIPTS["receipts"][0]
    head, payload, sig = v["jws"].split(".")
    forged = f"{head}.{payload[:-2]}{'A' if payload[-2] != 'A' else 'B'}{payload[-1]}.{sig}"
    key = jwt.PyJWK(RECEIPTS["jwks"]["keys"][0])
    with pytest.raises(jwt.PyJWTError):
        jwt.decode(forged, key.key, algorithms=[key.algorithm_name])


# -- the files are what the generator makes -------------------------------------------


def test_committed_vectors_equal_a_fresh_generation() -> None:
    gen = _generator()
    for name, doc in gen.build().items():
        committed = _load(name)
        fresh = json.loads(gen.dumps(doc))
        assert gen.stable(name, committed) == gen.stable(name, fresh), (
            f"docs/vectors/{name} is stale: run docs/vectors/make_vectors.py"
        )
