"""The one schema of a transaction record, as stored in its Redis hash.

The binding (who, which tool, which params, which tier, which key) is stored
once, as hash fields; scripts read and update the same fields. Restricted
transactions add what approvers and the confirmation agent need: the approved
params, the preview and its hash, quorum, and the votes so far.
"""

from __future__ import annotations

from typing import Any

import msgspec

__all__ = ["Approval", "TxRecord", "from_hash", "to_hash"]


class Approval(msgspec.Struct, frozen=True):
    by: str
    at: float


class TxRecord(msgspec.Struct, frozen=True, kw_only=True):
    """A transaction: its binding, its status and, when restricted, its approval."""

    txn: str
    sub: str
    tool: str = ""
    #: Params hash (``sha256:<hex>`` of the normalized params).
    ph: str = ""
    tier: str = ""
    status: str = ""
    auth_at: float = 0.0
    expires_at: float = 0.0
    #: Thumbprint of the key the caller must prove possession of, if bound.
    jkt: str | None = None
    agent: str | None = None
    #: Why policy escalated this transaction to approval, if it did.
    escalated: str | None = None
    decided_by: str | None = None
    approvals: tuple[Approval, ...] = ()
    # Restricted transactions only: what was asked for and what approvers see.
    params: dict[str, Any] | None = None
    preview: Any = None
    preview_hash: str | None = None
    quorum: int = 1
    approver_roles: tuple[str, ...] = ()
    requested_at: float | None = None
    reason: str | None = None


_FIELDS = frozenset(TxRecord.__struct_fields__)
#: Fields stored as JSON text; the others are plain strings and numbers.
_JSON = frozenset({"approvals", "params", "preview", "approver_roles"})
_encode = msgspec.json.encode


def to_hash(record: TxRecord) -> list[str | bytes]:
    """Field/value pairs for HSET; ``None`` fields are left out."""
    out: list[str | bytes] = []
    for name in TxRecord.__struct_fields__:
        value = getattr(record, name)
        if value is None:
            continue
        if name in _JSON:
            out += [name, _encode(value)]
        else:
            out += [name, value if isinstance(value, str) else repr(value)]
    return out


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def from_hash(raw: dict[Any, Any] | list[Any], **known: Any) -> TxRecord:
    """A record from HGETALL (a dict, or a flat field/value list as scripts return it).

    ``known`` fills fields the caller knows when the hash has none (an expired record).
    """
    pairs = raw.items() if isinstance(raw, dict) else zip(raw[::2], raw[1::2], strict=True)
    values: dict[str, Any] = dict(known)
    for key, value in pairs:
        name = _text(key)
        if name not in _FIELDS:
            continue  # votes, decisions, timestamps that only scripts read
        values[name] = msgspec.json.decode(value) if name in _JSON else _text(value)
    if values.get("approvals") == {}:  # an empty Lua table is encoded as '{}'
        values["approvals"] = []
    return msgspec.convert(values, TxRecord, strict=False)
