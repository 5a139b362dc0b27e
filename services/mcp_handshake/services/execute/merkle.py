"""Merkle batch receipts: one signature for an ``execute.batch`` that asks for them.

Each operation runs through ``handle_execute`` as always; only its receipt signer is
replaced by :class:`Leaves`, which keeps the claims the receipt would have signed
(``iss`` included) instead of signing them. Once every operation has ended,
:func:`merkle_reply` builds the RFC 9162 tree over the leaves (their RFC 8785 bytes,
in the order of the batch), signs its root once (``typ:
handshake-batch-receipt+jwt``, the receipt key) and gives each operation that ran its
``inclusion`` (index, path, leaf) in place of a receipt. Operations that failed have
no leaf, as they have no receipt alone. See protocol.md, "Merkle batch receipts".
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from mcp_handshake.services.core.signing import ReceiptSigner
from mcp_handshake.shared.batch import BatchReply, error_result
from mcp_handshake.shared.batchreceipt import TREE, Inclusion, MerkleExecuteReply
from mcp_handshake.shared.errors import InternalError
from mcp_handshake.shared.hashing import canonical_json
from mcp_handshake.shared.merkle import leaf_hash, tree
from mcp_handshake.shared.wire import ExecuteReply

__all__ = ["Leaves", "merkle_reply"]


class Leaves(ReceiptSigner):
    """A receipt signer that signs nothing: it keeps each receipt's claims, by
    transaction id, for the batch's tree (a token twice in a batch runs once)."""

    def __init__(self, signer: ReceiptSigner) -> None:
        self.signer = signer
        self.issuer = signer.issuer
        self.jwk = signer.jwk
        self.claims: dict[str, dict[str, Any]] = {}

    def sign(self, claims: Mapping[str, Any]) -> str:
        leaf = {"iss": self.issuer, **claims}
        self.claims[str(leaf["txn"])] = leaf
        return ""


def merkle_reply(
    reply: BatchReply, leaves: Leaves, sub: str, now: float | None = None
) -> BatchReply:
    """The batch's results with one signed root and each executed operation's inclusion
    (``now``: the root's ``iat``, the time unless given)."""
    results: list[Any] = list(reply.results)
    ran: list[tuple[int, ExecuteReply, dict[str, Any]]] = []
    for i, r in enumerate(results):
        if isinstance(r, ExecuteReply):
            leaf = leaves.claims.get(r.transaction_id)
            if leaf is None:  # never signed: not ours to vouch for
                results[i] = error_result(InternalError(transaction_id=r.transaction_id))
            else:
                ran.append((i, r, leaf))
    if not ran:
        return BatchReply(results)
    root, paths = tree([leaf_hash(canonical_json(leaf)) for _, _, leaf in ran])
    iat = time.time() if now is None else now
    jws = leaves.signer.sign_root(
        {"sub": sub, "iat": iat, "tree": TREE, "size": len(ran), "root": root.hex()}
    )
    for n, ((i, r, leaf), path) in enumerate(zip(ran, paths, strict=True)):
        inclusion = Inclusion(n, [p.hex() for p in path], leaf)
        results[i] = MerkleExecuteReply(
            r.transaction_id, r.result, inclusion,
            tier=r.tier, params_hash=r.params_hash, result_hash=r.result_hash,
        )  # fmt: skip
    return BatchReply(results, batch_receipt=jws)
