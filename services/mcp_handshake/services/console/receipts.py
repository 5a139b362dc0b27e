"""Checking a receipt an auditor was given against the mediator's keys and the audit trail."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import jwt

from mcp_handshake.client import HandshakeClient
from mcp_handshake.shared.batchreceipt import (
    is_batch_receipt,
    parse_batch_receipt,
    root_kid,
    verify_inclusion,
    verify_root,
)
from mcp_handshake.shared.errors import HandshakeError, ValidationFailed
from mcp_handshake.shared.protocol import RECEIPT_TYP

__all__ = ["ReceiptCheck", "check_receipt"]

MAX_RECEIPT_BYTES = 16 * 1024


@dataclass(frozen=True)
class ReceiptCheck:
    ok: bool
    reason: str
    claims: dict[str, Any] | None = None


async def check_receipt(
    hs: HandshakeClient, receipt: str, txn: str, events: list[dict[str, Any]]
) -> ReceiptCheck:
    """Whether ``receipt`` is signed by one of the mediator's receipt keys (its JWKS on
    ``handshake.v1.keys``), or, for one operation's Merkle batch receipt, its root is and
    its inclusion path leads to it; and whether it matches the ``receipt.issued`` event
    the audit trail holds for ``txn`` (tool, params hash, result hash)."""
    receipt = receipt.strip()
    if len(receipt) > MAX_RECEIPT_BYTES:
        return ReceiptCheck(False, "receipt too large")
    if is_batch_receipt(receipt):
        return _matches(await _batch_claims(hs, receipt), txn, events)
    try:
        kid = jwt.get_unverified_header(receipt).get("kid")
        keys = await hs.keys()
        if kid not in keys:
            keys = await hs.keys(refresh=True)
        key = keys.get(kid) if isinstance(kid, str) else None
        if key is None:
            return ReceiptCheck(False, "signed by a key the mediator does not publish")
        decoded = jwt.api_jwt.decode_complete(
            receipt, key.key, algorithms=[key.algorithm_name],
            options={"require": ["txn", "tool", "ph", "rh", "iat"], "verify_aud": False},
        )  # fmt: skip
    except jwt.PyJWTError:
        return ReceiptCheck(False, "not a receipt, or its signature does not verify")
    except HandshakeError as exc:
        return ReceiptCheck(False, f"the mediator's keys are unavailable ({exc.code})")
    claims: dict[str, Any] = decoded["payload"]
    if decoded["header"].get("typ") != RECEIPT_TYP:
        return ReceiptCheck(False, "not a receipt (wrong type)", claims)
    return _matches(claims, txn, events)


async def _batch_claims(hs: HandshakeClient, receipt: str) -> dict[str, Any] | ReceiptCheck:
    """One operation's Merkle batch receipt: its root's signature, then its path."""
    try:
        parsed = parse_batch_receipt(receipt)
        kid = root_kid(parsed.root)
        keys = await hs.keys()
        if kid not in keys:
            keys = await hs.keys(refresh=True)
        if kid not in keys:
            return ReceiptCheck(False, "signed by a key the mediator does not publish")
        root = verify_root(parsed.root, keys[kid], kid)
        verify_inclusion(root, parsed.index, parsed.path, parsed.leaf)
    except ValidationFailed as exc:
        return ReceiptCheck(False, f"not a batch receipt, or it does not verify ({exc.message})")
    except HandshakeError as exc:
        return ReceiptCheck(False, f"the mediator's keys are unavailable ({exc.code})")
    return dict(parsed.leaf)


def _matches(
    claims: dict[str, Any] | ReceiptCheck, txn: str, events: list[dict[str, Any]]
) -> ReceiptCheck:
    if isinstance(claims, ReceiptCheck):
        return claims
    if claims.get("txn") != txn:
        return ReceiptCheck(False, "the receipt is for another transaction", claims)
    issued = [e for e in events if e.get("kind") == "receipt.issued"]
    if not issued:
        return ReceiptCheck(False, "the audit trail records no receipt for it", claims)
    for e in issued:
        if all(e.get(k) == claims.get(k) for k in ("tool", "ph", "rh")):
            return ReceiptCheck(True, "signature verified; matches the audit trail", claims)
    return ReceiptCheck(False, "differs from the receipt the audit trail records", claims)
