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
import msgspec

from mcp_handshake.services.core.batchproof import op_jti
from mcp_handshake.services.core.signing import ReceiptSigner
from mcp_handshake.services.execute.merkle import Leaves, merkle_reply
from mcp_handshake.shared.batch import BATCH_PROOF_TYP, BatchReply, error_result, proof_ops
from mcp_handshake.shared.batchreceipt import BATCH_RECEIPT_TYP, Inclusion, envelope
from mcp_handshake.shared.errors import TargetError
from mcp_handshake.shared.hashing import canonical_json, params_hash, sha256_tagged
from mcp_handshake.shared.merkle import leaf_hash, tree
from mcp_handshake.shared.proofs import ProofKey
from mcp_handshake.shared.wire import ExecuteReply

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


#: The Merkle batch: the three operations, a fourth the target refused, and two more.
MERKLE_OPS = [
    *OPS,
    ("6f1d0c3e-0a41-4c52-9d0e-000000000004", {"base": "EUR", "quote": "XXX"}),
    ("6f1d0c3e-0a41-4c52-9d0e-000000000005", {"base": "EUR", "quote": "CHF"}),
    ("6f1d0c3e-0a41-4c52-9d0e-000000000006", {"base": "EUR", "quote": "CAD"}),
]
#: RFC 6962's test leaves (Certificate Transparency's merkle_tree_test), hex.
CT_LEAVES = ["", "00", "10", "2021", "3031", "40414243", "5051525354555657",
             "606162636465666768696a6b6c6d6e6f"]  # fmt: skip


def _merkle_results() -> tuple[list[Any], BatchReply, str]:
    signer = ReceiptSigner(mv.make_key("receipt", "EdDSA"), mv.SERVICE_ID)
    leaves, results = Leaves(signer), []
    for i, (txn, params) in enumerate(MERKLE_OPS):
        if params["quote"] == "XXX":
            results.append(error_result(TargetError("the target API refused the operation: "
                                                    "HTTP 404 (unknown_currency)",
                                                    transaction_id=txn)))  # fmt: skip
            continue
        ph = params_hash(params)
        result = {**params, "rate": 1.25 + i}
        rh = sha256_tagged(canonical_json(result))
        claims = {"sub": "alice", "txn": txn, "tool": TOOL, "tier": "public", "ph": ph, "rh": rh,
                  "iat": mv.NOW + 0.5, "auth_at": mv.NOW - 1.0, "approvals": []}  # fmt: skip
        leaves.sign(claims)
        results.append(ExecuteReply(txn, result, "", tier="public", params_hash=ph,
                                    result_hash=rh))  # fmt: skip
    reply = merkle_reply(BatchReply(results), leaves, "alice", now=mv.NOW + 1.25)
    plain = json.loads(msgspec.json.encode(reply))
    return plain["results"], reply, json.dumps(signer.jwks())


def _merkle() -> dict[str, Any]:
    results, reply, jwks = _merkle_results()
    root = reply.batch_receipt or ""
    ran = [r for r in results if "inclusion" in r]
    head, payload, _ = root.split(".")
    own = [envelope(root, msgspec.convert(r["inclusion"], Inclusion)) for r in ran]
    first = json.loads(own[0])
    # The same signing input signed by a key the JWKS does not hold.
    body = base64.urlsafe_b64decode(payload + "==")
    resigned = jwt.api_jws.encode(
        body,
        mv.make_key("agent-other", "EdDSA"),
        "EdDSA",
        {"typ": BATCH_RECEIPT_TYP, "kid": _decoded(head)["kid"]},
    )
    assert resigned.split(".")[:2] == [head, payload] and resigned != root
    path = list(first["path"])
    path[0] = "0" * 64
    refused = [
        ("path-altered", "one node of the path changed", {**first, "path": path}, False),
        ("index-moved", "the leaf claimed at another position", {**first, "index": 1}, False),
        (
            "leaf-altered",
            "another operation's leaf with this one's path",
            {**first, "leaf": json.loads(own[1])["leaf"]},
            False,
        ),
        (
            "root-resigned",
            "the root's claims under another key's signature",
            {**first, "root": resigned},
            False,
        ),
    ]
    return {
        "about": "Merkle batch receipts (protocol.md, 'Merkle batch receipts'): the execute "
        "batch asks receipts 'merkle'; the reply's batch_receipt signs the RFC 9162 root of "
        "the leaves (each the RFC 8785 bytes of the claims its single receipt would have, "
        "leaf hash SHA-256(0x00||leaf), node hash SHA-256(0x01||left||right)), and each "
        "operation that ran carries its inclusion. The fourth operation failed: no leaf.",
        "jwks": json.loads(jwks),
        "request": {
            "ops": [
                {"transaction_id": txn, "tool": TOOL, "params": p, "token": f"<token {i + 1}>"}
                for i, (txn, p) in enumerate(MERKLE_OPS)
            ],
            "receipts": "merkle",
        },
        "reply": {"results": results, "batch_receipt": root},
        "leaves": [
            {
                "canonical": canonical_json(r["inclusion"]["leaf"]).decode(),
                "leaf_hash": leaf_hash(canonical_json(r["inclusion"]["leaf"])).hex(),
            }
            for r in ran
        ],
        "root_header": _decoded(head),
        "root_claims": _decoded(payload),
        "receipts": own,
        "refused": [
            {"case": c, "description": d, "receipt": json.dumps(r), "valid": v}
            for c, d, r, v in refused
        ],
        "rfc6962": {
            "leaves": CT_LEAVES,
            "roots": [
                tree([leaf_hash(bytes.fromhex(x)) for x in CT_LEAVES[:n]])[0].hex()
                for n in range(1, len(CT_LEAVES) + 1)
            ],
        },
    }


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
        "merkle": _merkle(),
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
