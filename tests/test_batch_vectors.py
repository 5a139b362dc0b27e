"""The implementation against the batch vectors in docs/vectors/batch.json."""

from __future__ import annotations

import hashlib
import importlib.util
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest
import rfc8785

from mcp_handshake.client._receipts import Receipts
from mcp_handshake.services.core.batchproof import verify_batch_proof
from mcp_handshake.services.core.proofs import ProofVerifier
from mcp_handshake.shared.errors import ValidationFailed
from mcp_handshake.shared.merkle import leaf_hash, node_hash, root_from_path, tree
from tests.support.clock import freeze
from tests.test_vectors import _caller

VECTORS = Path(__file__).resolve().parent.parent / "docs" / "vectors"
BATCH: dict[str, Any] = json.loads((VECTORS / "batch.json").read_text(encoding="utf-8"))


class _NoRegistry:
    async def lookup(self, sub: str, kid: str) -> dict[str, Any] | None:
        return None


@pytest.fixture
def frozen_now(monkeypatch: pytest.MonkeyPatch) -> Iterator[float]:
    """The clock of PyJWT and of the verifiers stopped at the vectors' "now"."""
    yield freeze(monkeypatch, float(BATCH["now"]))


@pytest.mark.parametrize("v", BATCH["proofs"], ids=lambda v: v["case"])
async def test_batch_proofs(v: dict[str, Any], frozen_now: float) -> None:
    head, payload, _ = v["jws"].split(".")
    assert f"{head}.{payload}" == v["signing_input"]
    assert jwt.get_unverified_header(v["jws"]) == v["header"]
    verifier = ProofVerifier(_NoRegistry())
    if not v["valid"]:
        with pytest.raises(ValidationFailed):
            await verify_batch_proof(verifier, v["jws"], _caller(v["session"]))
        return
    proof = await verify_batch_proof(verifier, v["jws"], _caller(v["session"]))
    for op in v["operations"]:
        if op["outcome"] == "proven":
            assert proof.for_op(op["transaction_id"], op["params_hash"]).jti == op["op_jti"]
        else:
            with pytest.raises(ValidationFailed):
                proof.for_op(op["transaction_id"], op["params_hash"])


def test_proof_claims_list_the_sorted_pairs() -> None:
    pairs = sorted(BATCH["batch"]["pairs"])
    assert next(p for p in BATCH["proofs"] if p["case"] == "covers-all")["claims"]["ops"] == pairs


def test_op_jti_as_any_client_computes_it() -> None:
    for v in BATCH["proofs"]:
        for op in v["operations"]:
            if op["op_jti"] is not None:
                text = f"handshake-batch-jti\0{v['claims']['jti']}\0{op['transaction_id']}"
                assert op["op_jti"] == "b" + hashlib.sha256(text.encode()).hexdigest()[:32]


def test_each_receipt_of_a_batch_verifies_alone() -> None:
    doc = BATCH["receipts"]
    key = jwt.PyJWK(doc["jwks"]["keys"][0])
    for r in doc["receipts"]:
        claims = jwt.decode(r["jws"], key.key, algorithms=[key.algorithm_name])
        assert claims == r["claims"] and claims["txn"] == r["transaction_id"]
        assert claims["rh"] == "sha256:" + hashlib.sha256(rfc8785.dumps(r["result"])).hexdigest()


def test_a_receipt_with_another_operations_signature_fails() -> None:
    doc = BATCH["receipts"]
    key = jwt.PyJWK(doc["jwks"]["keys"][0])
    first, second = (r["jws"].split(".") for r in doc["receipts"][:2])
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(".".join([*first[:2], second[2]]), key.key, algorithms=[key.algorithm_name])


def test_committed_batch_vectors_equal_a_fresh_generation() -> None:
    spec = importlib.util.spec_from_file_location("mbv", VECTORS / "make_batch_vectors.py")
    assert spec is not None and spec.loader is not None
    gen: Any = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    assert json.loads(gen.dumps(gen.build())) == BATCH, "run docs/vectors/make_batch_vectors.py"


MERKLE = BATCH["merkle"]


def test_merkle_tree_reproduces_rfc6962_roots() -> None:
    doc = MERKLE["rfc6962"]
    leaves = [leaf_hash(bytes.fromhex(x)) for x in doc["leaves"]]
    for n, want in enumerate(doc["roots"], start=1):
        root, paths = tree(leaves[:n])
        assert root.hex() == want
        for i, path in enumerate(paths):
            assert root_from_path(leaves[i], i, n, path) == root


def test_merkle_leaves_root_and_paths_byte_for_byte() -> None:
    ran = [r for r in MERKLE["reply"]["results"] if "inclusion" in r]
    assert len(ran) == MERKLE["root_claims"]["size"] == len(MERKLE["reply"]["results"]) - 1
    hashes = []
    for r, v in zip(ran, MERKLE["leaves"], strict=True):
        canonical = rfc8785.dumps(r["inclusion"]["leaf"])
        assert canonical.decode() == v["canonical"]
        digest = hashlib.sha256(b"\x00" + canonical).digest()
        assert digest.hex() == v["leaf_hash"]
        hashes.append(digest)
    root, paths = tree(hashes)
    assert root.hex() == MERKLE["root_claims"]["root"]
    assert [[p.hex() for p in path] for path in paths] == [r["inclusion"]["path"] for r in ran]
    key = jwt.PyJWK(MERKLE["jwks"]["keys"][0])
    claims = jwt.decode(MERKLE["reply"]["batch_receipt"], key.key, algorithms=["EdDSA"])
    assert claims == MERKLE["root_claims"]
    assert jwt.get_unverified_header(MERKLE["reply"]["batch_receipt"]) == MERKLE["root_header"]


async def test_merkle_receipts_verify_and_the_refused_do_not() -> None:
    key = jwt.PyJWK(MERKLE["jwks"]["keys"][0])

    async def keys(_refresh: bool) -> dict[str, jwt.PyJWK]:
        return {MERKLE["root_header"]["kid"]: key}

    ran = [r for r in MERKLE["reply"]["results"] if "inclusion" in r]
    for receipt, r in zip(MERKLE["receipts"], ran, strict=True):
        leaf = r["inclusion"]["leaf"]
        expected = {"txn": r["transaction_id"], "tool": leaf["tool"], "ph": r["params_hash"]}
        assert await Receipts(keys).verify(receipt, expected, r["result"]) == leaf
    first = ran[0]
    expected = {"txn": first["transaction_id"], "tool": tool_of(first), "ph": first["params_hash"]}
    for v in MERKLE["refused"]:
        assert not v["valid"]
        with pytest.raises(ValidationFailed):
            await Receipts(keys).verify(v["receipt"], expected, first["result"])


def tool_of(result: dict[str, Any]) -> str:
    return str(result["inclusion"]["leaf"]["tool"])


def test_an_interior_node_never_passes_for_a_leaf() -> None:
    """The 0x00/0x01 prefixes (RFC 9162 2.1): the bytes of a node's two children, given
    as a leaf in a shorter tree, do not hash to that node (no second preimage)."""
    leaves = [leaf_hash(bytes.fromhex(x)) for x in MERKLE["rfc6962"]["leaves"][:4]]
    root, _ = tree(leaves)
    left, right = node_hash(leaves[0], leaves[1]), node_hash(leaves[2], leaves[3])
    assert root == node_hash(left, right)
    forged = leaf_hash(leaves[0] + leaves[1])  # "leaf" = the left node's children
    assert forged != left
    assert root_from_path(forged, 0, 2, [right]) != root
    # (only the node's own hash would do, and a verifier hashes the leaf it is given)
    assert root_from_path(left, 0, 2, [right]) == root
    assert root_from_path(leaves[0], 0, 4, [leaves[1]]) is None  # path too short for 4
    assert root_from_path(leaves[0], 4, 4, []) is None
    assert root_from_path(leaves[0], -1, 4, []) is None
