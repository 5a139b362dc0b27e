"""Builds the reference vectors in this folder with the real implementation.

    .venv/bin/python docs/vectors/make_vectors.py           # (re)write the JSON files
    .venv/bin/python docs/vectors/make_vectors.py --check   # exit 1 if they are stale

Every key is derived from a fixed label, so the output is reproducible: EdDSA
signatures are deterministic, ES256 signatures are not (a fresh run changes
only those; ``stable`` blanks them for comparisons, and the tests verify them
instead). THE KEYS ARE TEST-ONLY AND PUBLIC: never trust them anywhere.

What each piece comes from: params normalization is the demo tools'
``Tool.normalize`` and ``params_schema``, hashes ``shared/hashing.py``, key
thumbprints ``shared/keys.py``, well-formed proofs ``shared/proofs.ProofKey``,
receipts ``core/signing.ReceiptSigner``. Whether a proof is valid is stated
here, from the protocol; ``tests/test_vectors.py`` checks that the verifier
agrees.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import json
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from jwt.algorithms import ECAlgorithm, OKPAlgorithm

from mcp_handshake.services.core.signing import ReceiptSigner
from mcp_handshake.services.dev.demo.tools import TOOLS
from mcp_handshake.shared import proofs as shared_proofs
from mcp_handshake.shared.errors import InvalidParams
from mcp_handshake.shared.hashing import canonical_json, params_hash, sha256_tagged
from mcp_handshake.shared.keys import PrivateKey, jwk_thumbprint, public_jwk
from mcp_handshake.shared.proofs import ProofKey
from mcp_handshake.shared.protocol import PROOF_TYP

HERE = Path(__file__).resolve().parent
#: The "current time" every vector assumes: 2026-01-01T00:00:00Z.
NOW = 1767225600
WARNING = (
    "TEST-ONLY KEYS. Every private key in these files is public: never use one to "
    "sign or trust anything outside tests."
)
ISSUER = "https://idp.handshake.local"
AUDIENCE = "mcp-handshake"
SERVICE_ID = "mcp-handshake-dev"
TXN = "0b7c8a52-5f0e-4b8e-9a53-6c1f2d3e4a5b"
ES256_BLANK = "<ES256 signature: randomized, verify it instead>"
_P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
_TOOLS = {t.name: t for t in TOOLS}


# -- keys ---------------------------------------------------------------------------


def _seed(label: str) -> bytes:
    return hashlib.sha256(f"mcp-handshake test vectors v1: {label}".encode()).digest()


def make_key(name: str, alg: str) -> PrivateKey:
    """The test key called ``name``: always the same key for the same name."""
    if alg == "EdDSA":
        return ed25519.Ed25519PrivateKey.from_private_bytes(_seed(name))
    scalar = int.from_bytes(_seed(name), "big") % (_P256_ORDER - 1) + 1
    return ec.derive_private_key(scalar, ec.SECP256R1())


KEYS = {
    "idp": ("EdDSA", "signs session JWTs (the dev identity provider's role)"),
    "agent-ed25519": ("EdDSA", "an agent's proof key"),
    "agent-p256": ("ES256", "an agent's proof key"),
    "agent-other": ("EdDSA", "a key no session is bound to"),
    "receipt": ("EdDSA", "signs receipts (the execute workers' role)"),
}


def _private_jwk(key: PrivateKey) -> dict[str, Any]:
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return dict(OKPAlgorithm.to_jwk(key, as_dict=True))
    return dict(ECAlgorithm.to_jwk(key, as_dict=True))


def _pem(key: PrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


def keys_doc() -> dict[str, Any]:
    keys = {}
    for name, (alg, role) in KEYS.items():
        key = make_key(name, alg)
        pub = public_jwk(key)
        keys[name] = {
            "role": role,
            "alg": alg,
            "private_jwk": _private_jwk(key),
            "private_pem": _pem(key),
            "public_jwk": {k: pub[k] for k in ("kty", "crv", "x", "y") if k in pub},
            "thumbprint": pub["kid"],
        }
    rfc8037 = {"kty": "OKP", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}
    return {
        "warning": WARNING,
        "about": "Test keys (derived from fixed labels) and RFC 7638 SHA-256 thumbprints "
        "(base64url, no padding), which are the proof header's kid and a session's cnf.jkt.",
        "keys": keys,
        "thumbprints": [
            {
                "source": "RFC 8037 appendix A.3",
                "jwk": rfc8037,
                "thumbprint": jwk_thumbprint(rfc8037),
            },
        ],
    }


# -- params -------------------------------------------------------------------------

_CUS = "cus_8f3k2m9q"
PARAMS: list[tuple[str, str, dict[str, Any]]] = [
    ("decimal string is hashed as a JSON number", "payments.create_invoice",
     {"customer_id": _CUS, "amount": "250.50", "currency": "EUR"}),
    ("the same amount as a number: the same hash", "payments.create_invoice",
     {"customer_id": _CUS, "amount": 250.5, "currency": "EUR", "memo": None}),
    ("integer amount", "payments.create_invoice",
     {"customer_id": _CUS, "amount": 250, "currency": "EUR"}),
    ("largest amount, as a string", "payments.create_invoice",
     {"customer_id": _CUS, "amount": "1000000000", "currency": "EUR"}),
    ("two decimal places", "payments.create_invoice",
     {"customer_id": _CUS, "amount": 0.07, "currency": "USD"}),
    ("unicode memo: raw UTF-8 in the canonical form, no normalization",
     "payments.create_invoice",
     {"customer_id": _CUS, "amount": "12.5", "currency": "EUR",
      "memo": "Caf\u00e9 \u2615 \u2014 \u767a\u7968 \U0001f600 \"quoted\" \\ tab\t"}),
    ("maxLength counts code points: 200 emoji (400 UTF-16 units) fit",
     "payments.create_invoice",
     {"customer_id": _CUS, "amount": 1, "currency": "EUR", "memo": "\U0001f600" * 200}),
    ("absent optional params and defaults are filled", "payments.list_invoices", {}),
    ("digit string for an integer", "payments.list_invoices", {"limit": "5", "status": "paid"}),
    ("a number with no fraction is an integer", "payments.list_invoices", {"limit": 5.0}),
    ("two strings", "payments.get_exchange_rate", {"base": "EUR", "quote": "USD"}),
    ("confidential tool", "customers.get_customer", {"customer_id": _CUS}),
    ("code-like param", "reports.run_query", {"expression": "sum(amount) / count()"}),
    ("restricted tool", "payments.send_payment",
     {"to_account": "acct_4f9d2a", "amount": "2500.00", "currency": "EUR"}),
]  # fmt: skip

INVALID_PARAMS: list[tuple[str, str, dict[str, Any]]] = [
    ("three decimal places (number)", "payments.create_invoice",
     {"customer_id": _CUS, "amount": 12.345, "currency": "EUR"}),
    ("three decimal places (string)", "payments.create_invoice",
     {"customer_id": _CUS, "amount": "12.345", "currency": "EUR"}),
    ("trailing zero past two places", "payments.create_invoice",
     {"customer_id": _CUS, "amount": "12.300", "currency": "EUR"}),
    ("exponent in a string", "payments.create_invoice",
     {"customer_id": _CUS, "amount": "1e2", "currency": "EUR"}),
    ("whitespace in a string", "payments.create_invoice",
     {"customer_id": _CUS, "amount": " 12.5", "currency": "EUR"}),
    ("leading zero", "payments.create_invoice",
     {"customer_id": _CUS, "amount": "00.5", "currency": "EUR"}),
    ("zero", "payments.create_invoice", {"customer_id": _CUS, "amount": 0, "currency": "EUR"}),
    ("above the maximum", "payments.create_invoice",
     {"customer_id": _CUS, "amount": "1000000000.01", "currency": "EUR"}),
    ("boolean amount", "payments.create_invoice",
     {"customer_id": _CUS, "amount": True, "currency": "EUR"}),
    ("boolean integer", "payments.list_invoices", {"limit": True}),
    ("integer with a fraction", "payments.list_invoices", {"limit": 5.5}),
    ("integer string with a leading zero", "payments.list_invoices", {"limit": "05"}),
    ("unknown param (never dropped)", "payments.list_invoices", {"limit": 5, "page": 2}),
    ("null for a required param", "payments.get_exchange_rate", {"base": None, "quote": "USD"}),
    ("pattern: lower case", "payments.get_exchange_rate", {"base": "eur", "quote": "USD"}),
    ("pattern: $ is the end of the string, not before a newline",
     "payments.get_exchange_rate", {"base": "EUR\n", "quote": "USD"}),
    ("memo of 201 code points", "payments.create_invoice",
     {"customer_id": _CUS, "amount": 1, "currency": "EUR", "memo": "x" * 201}),
]  # fmt: skip

JCS: list[tuple[str, Any]] = [
    ("object members sorted", {"b": 1, "a": 2}),
    ("nested objects and arrays keep array order",
     {"z": {"y": [3, {"b": None, "a": True}]}, "a": "x"}),
    ("numbers in their shortest ECMAScript form",
     [250.5, 250.0, 1e21, 1e-7, -0.0, 0.1, 100, 1.5e300, 9007199254740991, -1.25]),
    ("string escapes: only \\\" \\\\ and controls; / and non-ASCII raw",
     "\u0000\u001f\b\t\n\f\r\"\\/\u007f \u00e9 \U0001f600"),
    ("members sorted by UTF-16 code units, not code points",
     {"\u20ac": 1, "\U0001f600": 2, "\ufb01": 3, "a": 4}),
    ("empty containers", {"a": [], "b": {}}),
]  # fmt: skip

UNHASHABLE: list[tuple[str, Any]] = [
    ("integer beyond 2**53 (JCS cannot represent it exactly)", {"n": 2**53 + 1}),
]


def params_doc() -> dict[str, Any]:
    vectors = []
    for why, name, raw in PARAMS:
        normalized = _TOOLS[name].normalize(raw)
        canonical = canonical_json(normalized).decode()
        vectors.append({
            "description": why, "tool": name, "params": raw, "normalized": normalized,
            "canonical": canonical, "params_hash": params_hash(normalized),
        })  # fmt: skip
    invalid = []
    for why, name, raw in INVALID_PARAMS:
        try:
            _TOOLS[name].normalize(raw)
        except InvalidParams:
            invalid.append({"description": why, "tool": name, "params": raw,
                            "error": "invalid_params"})  # fmt: skip
            continue
        raise AssertionError(f"accepted, but listed as invalid: {why}")
    jcs = [
        {"description": why, "value": value, "canonical": canonical_json(value).decode(),
         "sha256": sha256_tagged(canonical_json(value))}
        for why, value in JCS
    ]  # fmt: skip
    return {
        "about": "Params: normalized by the tool's schema (docs/protocol.md, Params schema), "
        "then params_hash = 'sha256:' + hex SHA-256 of the UTF-8 RFC 8785 (JCS) form. "
        "'schemas' is what handshake.v1.tools publishes for the demo tools.",
        "schemas": {t.name: t.params_schema() for t in TOOLS},
        "params": vectors,
        "invalid_params": invalid,
        "jcs": jcs,
        "unhashable": [
            {"description": w, "value": v, "error": "invalid_params"} for w, v in UNHASHABLE
        ],
    }


# -- sessions -----------------------------------------------------------------------

SESSIONS: dict[str, dict[str, Any]] = {
    "alice-bound-ed25519": {"sub": "alice", "roles": ["billing"], "bind": "agent-ed25519"},
    "alice-bound-p256": {"sub": "alice", "roles": ["billing"], "bind": "agent-p256"},
    "alice-unbound": {"sub": "alice", "roles": ["billing"], "scope": "invoices:read"},
    "dana-approver": {"sub": "dana", "roles": ["approver"]},
}


def sessions_doc() -> dict[str, Any]:
    idp = make_key("idp", "EdDSA")
    idp_jwk = public_jwk(idp)
    out = {}
    for i, (name, spec) in enumerate(SESSIONS.items()):
        claims: dict[str, Any] = {
            "iss": ISSUER, "aud": AUDIENCE, "sub": spec["sub"], "iat": NOW - 60,
            "nbf": NOW - 60, "exp": NOW + 3600, "jti": f"session-{i:04d}", "roles": spec["roles"],
        }  # fmt: skip
        if "scope" in spec:
            claims["scope"] = spec["scope"]
        jkt = None
        if "bind" in spec:
            jkt = public_jwk(make_key(spec["bind"], KEYS[spec["bind"]][0]))["kid"]
            claims["cnf"] = {"jkt": jkt}
        token = jwt.encode(claims, idp, algorithm="EdDSA", headers={"kid": idp_jwk["kid"]})
        out[name] = {
            "claims": claims,
            "jwt": token,
            "bound_key": spec.get("bind"),
            "caller": {"sub": spec["sub"], "roles": spec["roles"],
                       "scopes": spec["scope"].split() if "scope" in spec else [], "jkt": jkt},
        }  # fmt: skip
    return {
        "warning": WARNING,
        "about": "Session JWTs as the dev identity provider issues them (`mcp-handshake token "
        "mint`, with --public-key for cnf.jkt), signed by key 'idp'; 'caller' is what the "
        "service reads from each. Valid at 'now'.",
        "now": NOW,
        "config": {"issuer": ISSUER, "audience": AUDIENCE, "algorithms": ["EdDSA", "ES256"],
                   "leeway_s": 10, "roles_claim": "roles", "scopes_claim": "scope"},
        "jwks": {"keys": [idp_jwk]},
        "sessions": out,
    }  # fmt: skip


# -- proofs -------------------------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@contextlib.contextmanager
def _proof_clock(now: float, jti: str) -> Iterator[None]:
    """``ProofKey.sign`` at a fixed time with a fixed jti (it reads both from modules)."""
    saved = shared_proofs.time, shared_proofs.uuid  # type: ignore[attr-defined]
    shared_proofs.time = types.SimpleNamespace(time=lambda: now)  # type: ignore[attr-defined]
    shared_proofs.uuid = types.SimpleNamespace(  # type: ignore[attr-defined]
        uuid4=lambda: types.SimpleNamespace(hex=jti)
    )
    try:
        yield
    finally:
        shared_proofs.time, shared_proofs.uuid = saved  # type: ignore[attr-defined]


def _proof(
    case: str, why: str, *, session: str, key: str = "agent-ed25519", valid: bool,
    registry: tuple[tuple[str, str], ...] = (), header: dict[str, Any] | None = None,
    claims: dict[str, Any] | None = None, drop_header: tuple[str, ...] = (),
    drop_claims: tuple[str, ...] = (), ph: str, signer: str | None = None,
) -> dict[str, Any]:  # fmt: skip
    """One proof vector: the well-formed proof ``ProofKey`` signs, then the case's change."""
    alg = KEYS[key][0]
    proof_key = ProofKey(make_key(key, alg))
    jti = "jti-" + hashlib.sha256(case.encode()).hexdigest()[:24]
    base_header = {"typ": PROOF_TYP, "kid": proof_key.thumbprint, "jwk": proof_key.public_jwk}
    base_claims = {"txn": TXN, "tool": "payments.create_invoice", "ph": ph, "iat": NOW, "jti": jti}
    if header is None and claims is None and not drop_header and not drop_claims:
        with _proof_clock(NOW, jti):
            token = proof_key.sign(TXN, "payments.create_invoice", ph)
    else:
        hdr = {k: v for k, v in {**base_header, **(header or {})}.items() if k not in drop_header}
        body = {k: v for k, v in {**base_claims, **(claims or {})}.items() if k not in drop_claims}
        sign_alg = hdr.pop("alg", alg)
        sign_key: Any = "not-a-real-secret-0123456789abcdef" if signer == "hmac" else (
            make_key(key, alg))  # fmt: skip
        token = jwt.encode(body, sign_key, sign_alg, hdr)
    head, payload, _ = token.split(".")
    return {
        "case": case,
        "description": why,
        "session": session,
        "key": key,
        "registry": [{"sub": sub, "key": name} for sub, name in registry],
        "expect": {"txn": TXN, "tool": "payments.create_invoice", "ph": ph},
        "header": json.loads(base64.urlsafe_b64decode(head + "==")),
        "claims": json.loads(base64.urlsafe_b64decode(payload + "==")),
        "signing_input": f"{head}.{payload}",
        "jws": token,
        "valid": valid,
        "error": None if valid else "validation_failed",
    }


def proofs_doc(ph: str) -> dict[str, Any]:
    b, u = "alice-bound-ed25519", "alice-unbound"
    alice_ed = (("alice", "agent-ed25519"),)
    cases = [
        _proof("ed25519-session-bound", "cnf.jkt session: the key travels as jwk",
               session=b, valid=True, ph=ph),
        _proof("p256-session-bound", "ES256 (raw r||s signature, 64 bytes)",
               session="alice-bound-p256", key="agent-p256", valid=True, ph=ph),
        _proof("registry-kid-only", "no cnf: kid (the thumbprint) names a registered key",
               session=u, registry=alice_ed, drop_header=("jwk",), valid=True, ph=ph),
        _proof("registry-with-jwk", "no cnf: a jwk header names the key by its thumbprint",
               session=u, registry=alice_ed, valid=True, ph=ph),
        _proof("jti-8-chars", "shortest jti", session=b, claims={"jti": "abcdefgh"},
               valid=True, ph=ph),
        _proof("iat-60s-ago", "iat at the edge of the window", session=b,
               claims={"iat": NOW - 60}, valid=True, ph=ph),
        _proof("iat-fraction", "a fraction is accepted (send whole seconds)", session=b,
               claims={"iat": NOW + 0.5}, valid=True, ph=ph),
        _proof("bound-kid-only", "cnf.jkt session without the jwk header", session=b,
               drop_header=("jwk",), registry=alice_ed, valid=False, ph=ph),
        _proof("bound-other-key", "cnf.jkt session: a registered key no longer counts",
               session=b, key="agent-other", registry=(("alice", "agent-other"),),
               valid=False, ph=ph),
        _proof("kid-not-thumbprint", "kid must be the RFC 7638 thumbprint", session=u,
               registry=alice_ed, drop_header=("jwk",), header={"kid": "alice-key-1"},
               valid=False, ph=ph),
        _proof("registry-unregistered", "no cnf and the key is not registered", session=u,
               valid=False, ph=ph),
        _proof("extra-aud", "an aud claim is refused", session=b,
               claims={"aud": "mcp-handshake"}, valid=False, ph=ph),
        _proof("jti-7-chars", "jti shorter than 8", session=b, claims={"jti": "abcdefg"},
               valid=False, ph=ph),
        _proof("jti-129-chars", "jti longer than 128", session=b, claims={"jti": "j" * 129},
               valid=False, ph=ph),
        _proof("jti-missing", "jti is required", session=b, drop_claims=("jti",),
               valid=False, ph=ph),
        _proof("iat-61s-ahead", "iat outside +-60 s", session=b, claims={"iat": NOW + 61},
               valid=False, ph=ph),
        _proof("iat-milliseconds", "iat in milliseconds", session=b,
               claims={"iat": NOW * 1000}, valid=False, ph=ph),
        _proof("iat-string", "iat must be a number", session=b, claims={"iat": str(NOW)},
               valid=False, ph=ph),
        _proof("other-params", "ph of other params", session=b,
               claims={"ph": "sha256:" + "0" * 64}, valid=False, ph=ph),
        _proof("other-txn", "another transaction", session=b,
               claims={"txn": "11111111-2222-4333-8444-555555555555"}, valid=False, ph=ph),
        _proof("typ-jwt", "typ must be handshake-proof+jwt", session=b, header={"typ": "JWT"},
               valid=False, ph=ph),
        _proof("alg-hs256", "only EdDSA and ES256", session=b, header={"alg": "HS256"},
               signer="hmac", valid=False, ph=ph),
    ]  # fmt: skip
    return {
        "warning": WARNING,
        "about": "Proofs of possession (Handshake-Proof). Verify each at 'now' for the "
        "caller of its 'session' (sessions.json), with the key registry holding "
        "'registry' (sub -> key of keys.json), for transaction 'expect'. ES256 signatures "
        "are randomized: a fresh run gives other, equally valid ones.",
        "now": NOW,
        "proofs": cases,
    }


# -- receipts -----------------------------------------------------------------------


def receipts_doc(ph: str, ph_payment: str) -> dict[str, Any]:
    signer = ReceiptSigner(make_key("receipt", "EdDSA"), SERVICE_ID)
    specs = [
        ("internal", "payments.create_invoice", ph, [],
         {"id": "inv_00000001", "customer_id": "cus_8f3k2m9q", "amount": 250.5,
          "currency": "EUR", "status": "open", "memo": None}),
        ("restricted", "payments.send_payment", ph_payment,
         [{"by": "confirmation-agent", "at": NOW - 1.25}],
         {"id": "pay_00000001", "to_account": "acct_4f9d2a", "amount": 2500,
          "currency": "EUR", "status": "sent"}),
    ]  # fmt: skip
    receipts = []
    for tier, tool, p, approvals, result in specs:
        rh = sha256_tagged(canonical_json(result))
        claims = {
            "sub": "alice", "txn": TXN, "tool": tool, "tier": tier, "ph": p, "rh": rh,
            "iat": NOW + 0.375, "auth_at": NOW - 2.5, "approvals": approvals,
        }  # fmt: skip
        token = signer.sign(claims)
        receipts.append({
            "description": f"{tier} tier", "result": result, "rh": rh,
            "header": jwt.get_unverified_header(token),
            "claims": jwt.decode(token, options={"verify_signature": False}), "jws": token,
        })  # fmt: skip
    return {
        "warning": WARNING,
        "about": "Receipts as execute signs them (key 'receipt'); verify with 'jwks' (what "
        "handshake.v1.keys answers). rh = 'sha256:' + hex SHA-256 of the JCS of 'result'. "
        "iat and auth_at are seconds since the epoch and may carry a fraction.",
        "jwks": signer.jwks(),
        "receipts": receipts,
    }


# -- all ----------------------------------------------------------------------------


def build() -> dict[str, dict[str, Any]]:
    """Every vector file: name -> document."""
    params = params_doc()
    ph = params["params"][0]["params_hash"]
    ph_payment = next(v for v in params["params"] if v["tool"] == "payments.send_payment")
    return {
        "keys.json": keys_doc(),
        "params.json": params,
        "sessions.json": sessions_doc(),
        "proofs.json": proofs_doc(ph),
        "receipts.json": receipts_doc(ph, ph_payment["params_hash"]),
    }


def dumps(doc: dict[str, Any]) -> str:
    return json.dumps(doc, indent=2, ensure_ascii=False) + "\n"


def stable(name: str, doc: dict[str, Any]) -> dict[str, Any]:
    """``doc`` with what cannot repeat (ES256 signatures) blanked, for comparisons."""
    if name != "proofs.json":
        return doc
    proofs = []
    for p in doc["proofs"]:
        if p["header"].get("alg") == "ES256":
            p = {**p, "jws": f"{p['signing_input']}.{ES256_BLANK}"}
        proofs.append(p)
    return {**doc, "proofs": proofs}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    args = parser.parse_args(argv)
    stale = []
    for name, doc in build().items():
        path = HERE / name
        if args.check:
            old = json.loads(path.read_text()) if path.exists() else None
            if old is None or stable(name, old) != stable(name, json.loads(dumps(doc))):
                stale.append(name)
        else:
            path.write_text(dumps(doc))
    if stale:
        print("stale vectors: " + ", ".join(stale), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
