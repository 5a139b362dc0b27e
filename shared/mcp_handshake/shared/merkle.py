"""RFC 9162 (Certificate Transparency 2.0) Merkle trees over SHA-256, section 2.1.

Implemented over ``hashlib`` (docs/decisions.md, "Merkle batch receipts" says why
no library): the leaf hash is ``SHA-256(0x00 || leaf)``, an interior node's
``SHA-256(0x01 || left || right)`` (the prefixes keep a leaf from passing for a
node: no second preimage), the tree of ``n > 1`` leaves splits at the largest
power of two below ``n`` (2.1.1), an inclusion path lists the sibling hashes from
the leaf up (2.1.3.1), and it is verified exactly as 2.1.3.2 says.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

__all__ = ["MAX_PATH", "leaf_hash", "node_hash", "root_from_path", "tree"]

#: Longest inclusion path a verifier accepts (a tree of at most 2**64 leaves).
MAX_PATH = 64


def leaf_hash(leaf: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + leaf).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def tree(leaves: Sequence[bytes]) -> tuple[bytes, list[list[bytes]]]:
    """The root (MTH) of the leaf hashes ``leaves`` and each leaf's inclusion path."""
    if not leaves:
        raise ValueError("a Merkle tree needs at least one leaf")
    if len(leaves) == 1:
        return leaves[0], [[]]
    k = 1 << ((len(leaves) - 1).bit_length() - 1)  # largest power of two below n
    left, left_paths = tree(leaves[:k])
    right, right_paths = tree(leaves[k:])
    paths = [[*p, right] for p in left_paths] + [[*p, left] for p in right_paths]
    return node_hash(left, right), paths


def root_from_path(leaf: bytes, index: int, size: int, path: Sequence[bytes]) -> bytes | None:
    """The root that ``path`` proves the leaf hash ``leaf`` at ``index`` of a tree of
    ``size`` leaves under (RFC 9162 2.1.3.2), or ``None`` if the path cannot be one."""
    if not 0 <= index < size or len(path) > MAX_PATH:
        return None
    fn, sn, r = index, size - 1, leaf
    for p in path:
        if len(p) != 32 or sn == 0:
            return None
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    return r if sn == 0 else None
