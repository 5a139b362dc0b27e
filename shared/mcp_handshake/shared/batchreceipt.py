"""Merkle batch receipts (protocol.md, "Merkle batch receipts"), additive to protocol v1.

An ``execute.batch`` request with ``"receipts": "merkle"`` is answered with ONE
signed root, ``batch_receipt`` (a JWS, ``typ: handshake-batch-receipt+jwt``, claims
``iss``, ``sub``, ``iat``, ``tree``, ``size``, ``root``), and, for each operation that
ran, instead of its ``receipt``: ``inclusion`` ``{index, path, leaf}``. ``leaf`` holds
exactly the claims its single receipt would have; the tree's leaves are their RFC
8785 bytes, hashed and combined as RFC 9162 2.1 says (``shared.merkle``).

One operation's receipt on its own is the JSON object ``{root, index, path, leaf}``
(``root`` the batch's JWS): anyone holding the JWKS verifies the root's signature,
then that ``path`` leads from the leaf's hash to ``root``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal

import jwt
import msgspec

from .errors import ValidationFailed
from .hashing import canonical_json
from .merkle import MAX_PATH, leaf_hash, root_from_path

__all__ = [
    "BATCH_RECEIPT_TYP",
    "MAX_BATCH_RECEIPT_BYTES",
    "TREE",
    "BatchReceipt",
    "Inclusion",
    "MerkleExecuteReply",
    "ReceiptMode",
    "decode_signed",
    "envelope",
    "is_batch_receipt",
    "parse_batch_receipt",
    "root_kid",
    "verify_inclusion",
    "verify_root",
]

#: ``typ`` of a batch's signed Merkle root: never a receipt's, a proof's or a dispatch's.
BATCH_RECEIPT_TYP = "handshake-batch-receipt+jwt"
#: The ``tree`` claim: RFC 9162 section 2.1 over SHA-256, leaves the JCS of the claims.
TREE = "rfc9162-sha256"
#: The largest receipt of one operation a verifier reads.
MAX_BATCH_RECEIPT_BYTES = 64 * 1024
#: ``receipts`` of an ``execute.batch`` request: ``single`` (the default), or ``merkle``.
ReceiptMode = Literal["single", "merkle"]

_ROOT_CLAIMS = ["iss", "sub", "iat", "tree", "size", "root"]
#: A node hash in a path: 32 bytes, lowercase hex.
Node = Annotated[str, msgspec.Meta(pattern="^[0-9a-f]{64}$")]
Index = Annotated[int, msgspec.Meta(ge=0)]
Path = Annotated[list[Node], msgspec.Meta(max_length=MAX_PATH)]


class Inclusion(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Where an operation's leaf is in its batch's tree: its position among the batch's
    leaves (the operations that ran, in order), the sibling hashes from the leaf up
    (lowercase hex), and the leaf itself (its single receipt's claims)."""

    index: Index
    path: Path
    leaf: dict[str, Any]


class MerkleExecuteReply(msgspec.Struct, frozen=True, omit_defaults=True):
    """An operation's result in a Merkle batch: the execute reply with ``inclusion`` in
    place of ``receipt``."""

    transaction_id: str
    result: Any
    inclusion: Inclusion
    tier: str | None = None
    params_hash: str | None = None
    result_hash: str | None = None


class BatchReceipt(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One operation's receipt on its own: the batch's root JWS and its inclusion."""

    root: str
    index: Index
    path: Path
    leaf: dict[str, Any]


_decode = msgspec.json.Decoder(BatchReceipt).decode
_encode = msgspec.json.encode


def envelope(root: str, inclusion: Inclusion) -> str:
    """The receipt of one operation of a Merkle batch, as a string (JSON)."""
    return _encode(BatchReceipt(root, inclusion.index, inclusion.path, inclusion.leaf)).decode()


def is_batch_receipt(receipt: str) -> bool:
    """A batch receipt is a JSON object; a single receipt, a compact JWS."""
    return receipt.lstrip().startswith("{")


def parse_batch_receipt(receipt: str) -> BatchReceipt:
    if len(receipt) > MAX_BATCH_RECEIPT_BYTES:
        raise ValidationFailed("batch receipt too large")
    try:
        return _decode(receipt)
    except (msgspec.DecodeError, RecursionError):  # not JSON, not its shape, or too deep
        raise ValidationFailed("batch receipt inclusion path does not verify") from None


def root_kid(root: str) -> str:
    try:
        return str(jwt.get_unverified_header(root).get("kid", ""))
    except jwt.PyJWTError:
        raise ValidationFailed("batch receipt root is not a JWS") from None


def decode_signed(
    jws: str, key: jwt.PyJWK, kid: str, typ: str, required: list[str], what: str
) -> dict[str, Any]:
    """The claims of a receipt-key JWS (a single receipt, a batch root) once its
    signature verifies with ``key`` (the JWKS key ``kid``), its ``required`` claims are
    present and its header names ``typ`` and ``kid``; ``what`` names it in errors."""
    try:
        decoded = jwt.api_jwt.decode_complete(
            jws, key.key, algorithms=[key.algorithm_name],
            options={"require": required}, leeway=60,
        )  # fmt: skip
    except jwt.PyJWTError:
        raise ValidationFailed(f"{what} signature does not verify") from None
    header = decoded["header"]
    if header.get("typ") != typ or header.get("kid") != kid:
        raise ValidationFailed(f"{what} is not a handshake {what}'s")
    claims: dict[str, Any] = decoded["payload"]
    return claims


def verify_root(root: str, key: jwt.PyJWK, kid: str) -> dict[str, Any]:
    """The root's claims once its signature verifies with ``key`` (the JWKS key ``kid``)
    and its header and claims are a batch root's."""
    claims = decode_signed(root, key, kid, BATCH_RECEIPT_TYP, _ROOT_CLAIMS, "batch receipt")
    size, digest = claims["size"], claims["root"]
    if claims["tree"] != TREE or type(size) is not int or size < 1 or not _hex(digest):
        raise ValidationFailed("batch receipt root is not a handshake batch receipt's")
    return claims


def verify_inclusion(root: Mapping[str, Any], index: int, path: list[str], leaf: Any) -> None:
    """That ``path`` leads from ``leaf``'s hash at ``index`` to the verified ``root``'s
    tree, and the leaf was issued with it (same ``iss`` and ``sub``)."""
    if not isinstance(leaf, dict) or len(path) > MAX_PATH or not all(_hex(p) for p in path):
        raise ValidationFailed("batch receipt inclusion path does not verify")
    try:
        digest = leaf_hash(canonical_json(leaf))
    except Exception:  # numbers JCS cannot write: no receipt of ours
        raise ValidationFailed("batch receipt leaf is not canonical JSON") from None
    nodes = [bytes.fromhex(p) for p in path]
    if root_from_path(digest, index, root["size"], nodes) != bytes.fromhex(root["root"]):
        raise ValidationFailed("batch receipt inclusion path does not verify")
    if leaf.get("iss") != root["iss"] or leaf.get("sub") != root["sub"]:
        raise ValidationFailed("batch receipt leaf was not issued with this root")


def _hex(value: Any) -> bool:
    if not isinstance(value, str) or len(value) != 64:
        return False
    return all(c in "0123456789abcdef" for c in value)
