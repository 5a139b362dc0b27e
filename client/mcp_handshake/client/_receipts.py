"""Receipt verification: a single receipt (a JWS) or one operation's Merkle batch
receipt (``{root, index, path, leaf}``, protocol.md "Merkle batch receipts").

Either way the result is the receipt's claims, checked against the transaction, tool,
params hash and result the caller holds, with the same errors: ``ValidationFailed``
for a signature, header or path that does not verify, ``InvalidTransaction`` for
claims of another transaction or result. A batch's root is verified once and
remembered by its exact JWS (a few hundred of the latest).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any

import jwt

from mcp_handshake.shared.batchreceipt import (
    decode_signed,
    is_batch_receipt,
    parse_batch_receipt,
    root_kid,
    verify_inclusion,
    verify_root,
)
from mcp_handshake.shared.errors import InvalidTransaction, ValidationFailed
from mcp_handshake.shared.hashing import canonical_json, sha256_tagged
from mcp_handshake.shared.protocol import RECEIPT_TYP

__all__ = ["Receipts"]

#: ``refresh -> the JWKS by kid``.
Keys = Callable[[bool], Awaitable[dict[str, jwt.PyJWK]]]
#: Verified roots remembered.
ROOTS = 256
_REQUIRED = ["iss", "sub", "txn", "tool", "ph", "rh", "iat"]


class Receipts:
    def __init__(self, keys: Keys) -> None:
        self._keys = keys
        self._roots: OrderedDict[str, dict[str, Any]] = OrderedDict()

    async def verify(self, receipt: str, expected: dict[str, Any], result: Any) -> dict[str, Any]:
        """The receipt's claims, once verified and matching ``expected`` (``txn``,
        ``tool``, ``ph``) and the hash of ``result``."""
        if is_batch_receipt(receipt):
            claims = await self._batch(receipt)
        else:
            claims = await self._single(receipt)
        expected = {**expected, "rh": sha256_tagged(canonical_json(result))}
        for name, value in expected.items():
            if claims.get(name) != value:
                raise InvalidTransaction(f"receipt does not match this transaction ({name})")
        if not isinstance(claims.get("iat"), int | float) or claims["iat"] > time.time() + 60:
            raise ValidationFailed("receipt issued in the future")
        return claims

    async def _key(self, kid: str | None) -> tuple[str, jwt.PyJWK]:
        keys = await self._keys(False)
        if len(keys) == 1 and kid is None:
            # One key: decode once with it (header parsing is costly in PyJWT)
            ((only, key),) = keys.items()
            return only, key
        if kid not in keys:
            keys = await self._keys(True)
        found = keys.get(kid or "")
        if found is None:
            raise ValidationFailed("receipt signed by an unknown key")
        return kid or "", found

    async def _single(self, receipt: str) -> dict[str, Any]:
        several = len(await self._keys(False)) > 1
        try:
            kid, key = await self._key(_kid(receipt) if several else None)
        except jwt.PyJWTError:
            raise ValidationFailed("receipt signature does not verify") from None
        return decode_signed(receipt, key, kid, RECEIPT_TYP, _REQUIRED, "receipt")

    async def _batch(self, receipt: str) -> dict[str, Any]:
        parsed = parse_batch_receipt(receipt)
        root = self._roots.get(parsed.root)
        if root is None:
            kid, key = await self._key(root_kid(parsed.root))
            root = verify_root(parsed.root, key, kid)
            self._roots[parsed.root] = root
            if len(self._roots) > ROOTS:
                self._roots.popitem(last=False)
        verify_inclusion(root, parsed.index, parsed.path, parsed.leaf)
        for name in _REQUIRED:
            if name not in parsed.leaf:
                raise ValidationFailed(f"batch receipt leaf lacks {name}")
        return dict(parsed.leaf)


def _kid(receipt: str) -> str:
    return str(jwt.get_unverified_header(receipt).get("kid", ""))
