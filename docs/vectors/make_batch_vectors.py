"""Builds ``batch.json``: reference vectors of the batch handshake (protocol.md, "Batch").

    .venv/bin/python docs/vectors/make_batch_vectors.py           # (re)write batch.json
    .venv/bin/python docs/vectors/make_batch_vectors.py --check   # exit 1 if stale

It reuses ``make_vectors.py`` (the same fixed-label test keys, sessions and
"now"). Batch proofs come from ``shared/proofs.ProofKey.sign_batch``, each
operation's jti from ``core/batchproof.op_jti``, receipts from
``core/signing.ReceiptSigner`` (an operation of a batch gets a v1 receipt of its
own). THE KEYS ARE TEST-ONLY AND PUBLIC: never trust them anywhere.
"""

from __future__ import annotations

import argparse
import base64
import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

import jwt

from mcp_handshake.services.core.batchproof import op_jti
from mcp_handshake.services.core.signing import ReceiptSigner
from mcp_handshake.shared.batch import BATCH_PROOF_TYP, proof_ops
from mcp_handshake.shared.hashing import canonical_json, params_hash, sha256_tagged
from mcp_handshake.shared.proofs import ProofKey

HERE = Path(__file__).resolve().parent
_spec = importlib.util.spec_from_file_location("make_vectors", HERE / "make_vectors.py")
assert _spec is not None and _spec.loader is not None
mv: Any = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(mv)

TOOL = "payments.get_exchange_rate"
#: The operations of the example batch: (transaction id, params).
OPS = [
    ("6f1d0c3e-0a41-4c52-9d0e-000000000001", {"base": "EUR", "quote": "USD"}),
    ("6f1d0c3e-0a41-4c52-9d0e-000000000002", {"base": "EUR", "quote": "GBP"}),
    ("6f1d0c3e-0a41-4c52-9d0e-000000000003", {"base": "EUR", "quote": "JPY"}),
]
PAIRS = [(txn, params_hash(p)) for txn, p in OPS]


def _decoded(part: str) -> Any:
    return json.loads(base64.urlsafe_b64decode(part + "=="))


def _proof(case: str, why: str, *, covers: list[int], key: str = "agent-ed25519",
           typ: str = BATCH_PROOF_TYP, valid: bool) -> dict[str, Any]:  # fmt: skip
    jti = "jti-batch-" + case
    pairs = [PAIRS[i] for i in covers]
    if key == "agent-ed25519" and typ == BATCH_PROOF_TYP:
        with mv._proof_clock(mv.NOW, jti):
            token = ProofKey(mv.make_key(key, "EdDSA")).sign_batch(pairs)
    else:
        pk = ProofKey(mv.make_key(key, "EdDSA"))
        headers = {"typ": typ, "kid": pk.thumbprint, "jwk": pk.public_jwk}
        claims = {"ops": proof_ops(pairs), "iat": mv.NOW, "jti": jti}
        token = jwt.encode(claims, mv.make_key(key, "EdDSA"), "EdDSA", headers)
    head, payload, _ = token.split(".")
    expect = [
        {"transaction_id": txn, "params_hash": ph,
         "outcome": "proven" if valid and i in covers else "validation_failed",
         "op_jti": op_jti(jti, txn) if valid and i in covers else None}
        for i, (txn, ph) in enumerate(PAIRS)
    ]  # fmt: skip
    return {"case": case, "description": why, "session": "alice-bound-ed25519", "key": key,
            "header": _decoded(head), "claims": _decoded(payload),
            "signing_input": f"{head}.{payload}", "jws": token, "valid": valid,
            "operations": expect}  # fmt: skip


def _receipts() -> dict[str, Any]:
    signer = ReceiptSigner(mv.make_key("receipt", "EdDSA"), mv.SERVICE_ID)
    out = []
    for i, ((txn, ph), (_, params)) in enumerate(zip(PAIRS, OPS, strict=True)):
        result = {**params, "rate": 1.25 + i}
        rh = sha256_tagged(canonical_json(result))
        claims = {"sub": "alice", "txn": txn, "tool": TOOL, "tier": "public", "ph": ph, "rh": rh,
                  "iat": mv.NOW + 0.5, "auth_at": mv.NOW - 1.0, "approvals": []}  # fmt: skip
        token = signer.sign(claims)
        out.append({"transaction_id": txn, "result": result, "rh": rh, "jws": token,
                    "claims": jwt.decode(token, options={"verify_signature": False})})  # fmt: skip
    return {"jwks": signer.jwks(), "receipts": out}


def build() -> dict[str, Any]:
    ops = [{"tool": TOOL, "params": p} for _, p in OPS]
    return {
        "warning": mv.WARNING,
        "about": "Batch proofs (typ handshake-batch-proof+jwt; claims ops, iat, jti) for the "
        "example batch 'batch', by keys of keys.json, in the context of sessions.json's "
        "session; each operation's outcome and the jti it claims (op_jti). Receipts: an "
        "operation of a batch gets a v1 receipt of its own (receipts.json rules).",
        "now": mv.NOW,
        "batch": {
            "authorize_request": {"ops": ops},
            "execute_request": {
                "ops": [
                    {"transaction_id": txn, "tool": TOOL, "params": p, "token": f"<token {i + 1}>"}
                    for i, (txn, p) in enumerate(OPS)
                ]
            },
            "pairs": [list(p) for p in PAIRS],
        },
        "proofs": [
            _proof("covers-all", "names every operation", covers=[0, 1, 2], valid=True),
            _proof(
                "covers-two",
                "names two of three: the third is refused alone",
                covers=[0, 1],
                valid=True,
            ),
            _proof(
                "other-key",
                "signed by a key the session is not bound to",
                covers=[0, 1, 2],
                key="agent-other",
                valid=False,
            ),
            _proof(
                "single-typ",
                "a single proof's typ is not a batch proof",
                covers=[0, 1, 2],
                typ="handshake-proof+jwt",
                valid=False,
            ),
        ],
        "receipts": _receipts(),
    }


def dumps(doc: dict[str, Any]) -> str:
    return json.dumps(doc, indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    args = parser.parse_args(argv)
    path = HERE / "batch.json"
    fresh = dumps(build())
    if not args.check:
        path.write_text(fresh)
        return 0
    if not path.exists() or json.loads(path.read_text()) != json.loads(fresh):
        print("stale vectors: batch.json", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
