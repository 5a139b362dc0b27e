"""What the console reads and does, through the same code as the CLI.

Approvals go through :class:`HandshakeClient` on the console's NATS connection
with the signed-in user's session JWT (``approvals list/approve/deny``);
status is ``mcp-handshake status``'s snapshot; a transaction's story is
``audit show``'s reading of the audit log, with ``audit verify``'s chain
check and the signed-decision check of ``core.proofs``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nats.aio.client import Client as NATS

from mcp_handshake.client import HandshakeClient
from mcp_handshake.services.audit.main import audit_log_path
from mcp_handshake.services.audit.verify import VerifyResult, verify_log
from mcp_handshake.services.console.receipts import ReceiptCheck, check_receipt
from mcp_handshake.services.core.config import HandshakeConfig
from mcp_handshake.services.core.proofs import decision_signer
from mcp_handshake.services.dev.cli._audit import audit_events
from mcp_handshake.services.dev.cli._status import snapshot
from mcp_handshake.services.policy import Policy
from mcp_handshake.shared.proofs import ProofKey
from mcp_handshake.shared.settings import Settings
from mcp_handshake.shared.wire import DecideReply, PendingApproval

__all__ = ["Backend", "Story"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Story:
    """One transaction as the audit trail tells it."""

    txn: str
    events: list[dict[str, Any]]
    chain: VerifyResult
    receipt: ReceiptCheck | None = None


class Backend:
    def __init__(
        self,
        settings: Settings,
        cfg: HandshakeConfig,
        policy: Policy,
        nc: NATS,
        approver_keys: Path | None = None,
    ) -> None:
        self.settings = settings
        self.cfg = cfg
        self.policy = policy
        self.nc = nc
        self._approver_keys = approver_keys
        self._last: tuple[float, dict[str, int]] | None = None

    # -- approvals ---------------------------------------------------------------------

    def _client(self, token: str, key: ProofKey | None = None) -> HandshakeClient:
        return HandshakeClient(nc=self.nc, session=token, prefix=self.settings.subject_prefix,
                               proof_key=key, timeout_s=10.0)  # fmt: skip

    def approver_key(self, sub: str) -> ProofKey | None:
        """The approver's key file in the configured folder (``<sub>.pem``), if any."""
        if self._approver_keys is None or not sub.replace("-", "").replace("_", "").isalnum():
            return None
        path = self._approver_keys / f"{sub}.pem"
        return ProofKey.load_or_create(path) if path.is_file() else None

    async def approvals(self, token: str) -> list[PendingApproval]:
        return await self._client(token).approvals()

    async def decide(
        self, token: str, sub: str, txn: str, decision: str, reason: str | None
    ) -> DecideReply:
        """As the approver: signed with their key file when the console has one, else
        unsigned (which the mediator accepts only from approvers not bound to a key)."""
        key = self.approver_key(sub)
        client = self._client(token, key)
        return await client.decide(txn, decision, reason, sign=True if key else None)

    # -- status ------------------------------------------------------------------------

    async def status(self) -> dict[str, Any]:
        """``status``'s snapshot, with requests per second per kind since the last one."""
        snap = await snapshot(self.settings, self.nc)
        now = time.monotonic()
        counts = {k: int(v["requests"]) for k, v in snap["workers"].items()}
        if self._last is not None and now > self._last[0]:
            then, before = self._last
            snap["rates"] = {k: max(n - before.get(k, 0), 0) / (now - then)
                             for k, n in counts.items()}  # fmt: skip
        self._last = (now, counts)
        return snap

    # -- audit -------------------------------------------------------------------------

    def _audit_jwks(self) -> Any:
        return json.loads(self.cfg.resolve(self.cfg.keys.audit_public).read_text())

    def _events(self) -> list[dict[str, Any]]:
        return audit_events(self.settings)

    async def search(
        self, txn: str, user: str, tool: str, limit: int = 200
    ) -> list[dict[str, Any]]:
        """Transactions whose id, requester and tool contain what was asked, newest first."""
        events = await asyncio.to_thread(self._events)
        found: dict[str, dict[str, Any]] = {}
        for e in events:
            t = e.get("txn")
            if not t:
                continue
            row = found.setdefault(t, {"txn": t, "sub": None, "tool": None, "tier": None,
                                       "first": e.get("at", 0), "last": "", "at": 0})  # fmt: skip
            for k in ("sub", "tool", "tier"):
                row[k] = row[k] or e.get(k)
            if e.get("at", 0) >= row["at"]:
                row["at"], row["last"] = e.get("at", 0), f"{e.get('kind')} {e.get('outcome')}"
        rows = [r for r in found.values() if txn in r["txn"] and user in (r["sub"] or "")
                and tool in (r["tool"] or "")]  # fmt: skip
        return sorted(rows, key=lambda r: r["at"], reverse=True)[:limit]

    async def story(self, txn: str, receipt: str | None = None) -> Story:
        def read() -> tuple[list[dict[str, Any]], VerifyResult]:
            events = [e for e in self._events() if e.get("txn") == txn]
            return events, verify_log(audit_log_path(self.settings), self._audit_jwks())

        events, chain = await asyncio.to_thread(read)
        events = [_with_signature(e) for e in sorted(events, key=lambda e: e.get("at", 0))]
        checked = None
        if receipt:
            checked = await check_receipt(self._client(""), receipt, txn, events)
        return Story(txn, events, chain, checked)


def _with_signature(event: dict[str, Any]) -> dict[str, Any]:
    """The event, with an approver's signed decision checked (``signed_by`` or
    ``signature_invalid``), as ``audit show`` does."""
    out = {k: v for k, v in event.items() if k != "signature"}
    if event.get("signature"):
        signer = decision_signer(event["signature"], txn=event.get("txn") or "",
                                 preview_hash=event.get("preview_hash") or "",
                                 decision=event.get("decision") or "")  # fmt: skip
        out["signed_by" if signer else "signature_invalid"] = signer or True
    return out
