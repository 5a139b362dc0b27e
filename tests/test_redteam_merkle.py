"""Merkle batch receipts attacked: paths of the wrong shape, index or length, hostile
receipt JSON (too deep, too large, duplicate keys), and a root from another batch or
presented as something else. Each is refused with the verifiers' own errors (the
clients' ``ValidationFailed`` / ``InvalidTransaction``, the console's ``ok=False``),
never an unhandled exception and never an acceptance."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from mcp_handshake.client import CallResult
from mcp_handshake.services.console.receipts import check_receipt
from mcp_handshake.services.core.signing import DispatchSigner, DispatchVerifier, ReceiptSigner
from mcp_handshake.services.dev.devstack import Stack
from mcp_handshake.shared.batchreceipt import (
    MAX_BATCH_RECEIPT_BYTES,
    decode_signed,
    parse_batch_receipt,
    verify_inclusion,
    verify_root,
)
from mcp_handshake.shared.errors import InvalidTransaction, ValidationFailed
from mcp_handshake.shared.hashing import canonical_json
from mcp_handshake.shared.merkle import MAX_PATH, leaf_hash, node_hash, root_from_path, tree
from mcp_handshake.shared.protocol import DISPATCH_TYP, RECEIPT_TYP
from mcp_handshake.shared.wire import Grant
from tests.test_batch_merkle import EXCHANGE, RATES
from tests.test_client import agent

# -- the tree alone ---------------------------------------------------------------------


def _leaves(n: int) -> list[bytes]:
    return [leaf_hash(f"leaf-{i}".encode()) for i in range(n)]


def test_a_path_proves_its_leaf_at_its_index_only() -> None:
    """Every leaf of every tree up to 40 leaves: its path leads to the root at its own
    index, never at another index, and never once cut short, lengthened or given a
    node of the wrong size; an index at or past the size is no index."""
    for n in range(1, 41):
        hashes = _leaves(n)
        root, paths = tree(hashes)
        for i, path in enumerate(paths):
            assert root_from_path(hashes[i], i, n, path) == root
            for j in range(n):
                if j != i:
                    assert root_from_path(hashes[i], j, n, path) != root, (n, i, j)
            for bad in (n, n + 1, -1, 2**64 + i):
                assert root_from_path(hashes[i], bad, n, path) is None
            if path:
                assert root_from_path(hashes[i], i, n, path[:-1]) != root
                assert root_from_path(hashes[i], i, n, [*path[:-1], path[-1][:31]]) is None
            assert root_from_path(hashes[i], i, n, [*path, root]) is None
            # Another leaf's hash with this path: never the root.
            other = hashes[(i + 1) % n]
            if n > 1:
                assert root_from_path(other, i, n, path) != root


def test_an_interior_node_or_the_root_never_passes_for_a_leaf() -> None:
    """Second preimage: the two halves of a tree of four, or its root, offered as a
    leaf hash with the rest of the path, lead nowhere (the path has the wrong length
    for the signed size), and a leaf's hash is never a node's of the same bytes."""
    h = _leaves(4)
    root, _ = tree(h)
    left, right = node_hash(h[0], h[1]), node_hash(h[2], h[3])
    assert root_from_path(left, 0, 4, [right]) is None
    assert root_from_path(right, 1, 4, [left]) is None
    assert root_from_path(root, 0, 4, []) is None
    assert leaf_hash(h[0] + h[1]) != left


def test_a_huge_signed_size_costs_no_more_than_a_path() -> None:
    """A root whose size is 2**200 (a verifier never trusts more than MAX_PATH nodes):
    the check is bounded by the path, not the size."""
    h = leaf_hash(b"x")
    start = time.perf_counter()
    for index in (0, 2**199, 2**200 - 1):
        assert root_from_path(h, index, 2**200, [h] * MAX_PATH) is None
    assert time.perf_counter() - start < 1.0


# -- an operation's receipt on its own, hostile JSON ---------------------------------------


def _nested(depth: int) -> str:
    return '{"root":"x","index":0,"path":[],"leaf":{"a":' + "[" * depth + "]" * depth + "}}"


@pytest.mark.parametrize(
    "receipt",
    [
        _nested(3000),  # 6 KB of brackets: deeper than the interpreter's recursion
        _nested(30000),
        '{"root":"x","index":-1,"path":[],"leaf":{}}',
        '{"root":"x","index":true,"path":[],"leaf":{}}',
        '{"root":"x","index":0.0,"path":[],"leaf":{}}',
        '{"root":"x","index":0,"path":["' + "A" * 64 + '"],"leaf":{}}',
        '{"root":"x","index":0,"path":["' + "a" * 62 + '"],"leaf":{}}',
        '{"root":"x","index":0,"path":' + json.dumps(["a" * 64] * (MAX_PATH + 1)) + ',"leaf":{}}',
        '{"root":"x","index":0,"path":[],"leaf":[]}',
        '{"root":"x","index":0,"path":[],"leaf":{},"extra":1}',
        '{"root":"x","index":0,"path":[]}',
        "[" * 20000 + "]" * 20000,
        " " * (MAX_BATCH_RECEIPT_BYTES + 1) + "{}",
    ],
)
def test_a_malformed_batch_receipt_is_refused_as_such(receipt: str) -> None:
    with pytest.raises(ValidationFailed):
        parse_batch_receipt(receipt)


def test_a_leaf_that_jcs_cannot_write_is_refused_as_such() -> None:
    root = {"size": 1, "root": "0" * 64, "iss": "i", "sub": "s"}
    deep: Any = []
    for _ in range(5000):
        deep = [deep]
    for leaf in ({"n": 2**60}, {"n": float("inf")}, {"a": deep}):
        with pytest.raises(ValidationFailed):
            verify_inclusion(root, 0, [], leaf)


# -- against the real stack ----------------------------------------------------------------


def _grant(res: CallResult) -> Grant:
    return Grant(res.transaction_id, "", "granted", "public", res.claims["ph"], 0)


async def test_hostile_batch_receipts_against_the_client_and_the_console(stack: Stack) -> None:
    """A leaf with a duplicate ``txn`` (another op's first, this op's last; Python and
    TypeScript both keep the last, and the hash is of what was kept), a root of another
    batch of the same agent, another op's leaf, and a receipt too deep to parse: each
    refused by the client and the console, and the console never raises."""
    async with agent(stack, "alice", "billing") as hs:
        first = await hs.call_many([(EXCHANGE, p) for p in RATES[:3]])
        second = await hs.call_many([(EXCHANGE, p) for p in RATES[3:]])
        assert all(isinstance(o, CallResult) for o in first + second)
        a, b, c = (o for o in first if isinstance(o, CallResult))
        other = second[0]
        assert isinstance(other, CallResult)
        own = json.loads(a.receipt)
        trail = [{"kind": "receipt.issued", **{k: own["leaf"][k] for k in ("tool", "ph", "rh")}}]
        # The leaf written with its txn twice: another transaction's id first.
        body = json.dumps(own["leaf"])
        dup = a.receipt.replace(body, '{"txn":"' + b.transaction_id + '",' + body[1:])
        assert json.loads(dup)["leaf"]["txn"] == a.transaction_id
        claims = await hs.verify_receipt(dup, a.result, _grant(a), EXCHANGE)
        assert claims["txn"] == a.transaction_id  # the parse that was hashed, no other
        with pytest.raises(InvalidTransaction):
            await hs.verify_receipt(dup, b.result, _grant(b), EXCHANGE)
        # The same leaf and path under the root of another batch of the same agent.
        moved = {**own, "root": json.loads(other.receipt)["root"]}
        # Another op's leaf and path (its own, valid) offered for this op.
        theirs = json.loads(c.receipt)
        deep = _nested(3000)
        for forged in (json.dumps(moved), json.dumps(theirs), deep):
            with pytest.raises((ValidationFailed, InvalidTransaction)):
                await hs.verify_receipt(forged, a.result, _grant(a), EXCHANGE)
            check = await check_receipt(hs, forged, a.transaction_id, trail)
            assert not check.ok
        # The root JWS alone is neither a receipt for the console nor for the client.
        check = await check_receipt(hs, own["root"], a.transaction_id, trail)
        assert not check.ok
        assert (await check_receipt(hs, a.receipt, a.transaction_id, trail)).ok


_PKG = Path(__file__).resolve().parent.parent / "client" / "typescript"
_NODE = os.environ.get("HANDSHAKE_NODE") or shutil.which("node")
#: Leaves two JSON readers could read differently: duplicate keys, ``__proto__``,
#: numbers written in other forms, escapes, a lone surrogate.
_TRICKY = [
    '{"txn":"a","tool":"t","txn":"b"}',
    '{"__proto__":{"txn":"x"},"txn":"a"}',
    '{"iat":1.0e9,"n":-0.0,"m":1E-7,"k":100000000000000000000}',
    '{"s":"\\u00e9\\u0000\\ud83d\\ude00","t":"\\ud800"}',
]


@pytest.mark.skipif(
    _NODE is None or not (_PKG / "dist" / "merkle.js").exists(), reason="no node / built client"
)
def test_python_and_typescript_hash_the_same_leaf_or_both_refuse_it() -> None:
    """Each tricky leaf: parsed by each client's own reader (msgspec; JSON.parse), it
    hashes to the same leaf hash in both, or neither can hash it: no leaf verifies in
    one client with claims the other would read differently."""
    script = (
        'import { parseBatchReceipt, leafHash } from "./dist/merkle.js";'
        'import { canonicalJson } from "./dist/hashing.js";'
        "const out = JSON.parse(process.argv[1]).map((t) => {"
        "  try { const r = parseBatchReceipt(t);"
        '    return leafHash(canonicalJson(r.leaf)).toString("hex"); }'
        "  catch { return null; } });"
        "console.log(JSON.stringify(out));"
    )
    texts = ['{"root":"x","index":0,"path":[],"leaf":' + leaf + "}" for leaf in _TRICKY]
    run = subprocess.run(
        [_NODE or "node", "--input-type=module", "-e", script, json.dumps(texts)],
        cwd=_PKG, capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    theirs = json.loads(run.stdout)
    for text, ts in zip(texts, theirs, strict=True):
        try:
            py: str | None = leaf_hash(canonical_json(parse_batch_receipt(text).leaf)).hex()
        except Exception:  # JCS cannot write it: refused as not canonical
            py = None
        if py is not None and ts is not None:  # a leaf both can hash: the same to both
            assert py == ts, text
    assert theirs[0] is not None and theirs[2] is not None  # not vacuously


def test_a_root_is_no_receipt_and_no_dispatch_even_under_one_key() -> None:
    """Typ confusion with a single key doing every job (worse than any deployment, where
    dispatches have their own key): a batch root is refused as a dispatch (its payload
    as the body) and as a single receipt, and a single receipt or a dispatch-typed JWS
    over root claims is refused as a root."""
    key = Ed25519PrivateKey.generate()
    signer = ReceiptSigner(key, "mediator")
    kid = signer.jwk["kid"]
    pyjwk = jwt.PyJWK(signer.jwk)
    claims = {"sub": "alice", "iat": int(time.time()), "tree": "rfc9162-sha256", "size": 1,
              "root": "ab" * 32}  # fmt: skip
    root = signer.sign_root(claims)
    assert verify_root(root, pyjwk, kid)["sub"] == "alice"
    header_b64, payload_b64, sig = root.split(".")
    body = jwt.utils.base64url_decode(payload_b64)
    assert not DispatchVerifier(signer.jwks()).verify(f"{header_b64}..{sig}", body)
    with pytest.raises(ValidationFailed):
        decode_signed(root, pyjwk, kid, RECEIPT_TYP, ["iss", "sub", "iat"], "receipt")
    receipt = signer.sign({**claims, "txn": "t", "tool": "x", "ph": "p", "rh": "r"})
    dispatch = jwt.api_jws.encode(
        json.dumps({"iss": "mediator", **claims}).encode(), key, "EdDSA",
        {"typ": DISPATCH_TYP, "kid": kid},
    )  # fmt: skip
    also = DispatchSigner(key).sign(b"{}")
    for jws in (receipt, dispatch):
        with pytest.raises(ValidationFailed):
            verify_root(jws, pyjwk, kid)
    with pytest.raises(ValidationFailed):
        verify_root(also, pyjwk, kid)
