"""``reconcile``: settle one of your transactions left ``outcome_unknown``."""

from __future__ import annotations

import json

from mcp_handshake.services.dev.cli._common import SessionOpt, run_client


def reconcile(txn: str, session: SessionOpt = None) -> None:
    """Settle a transaction whose outcome is unknown: the same operation again under the
    same Idempotency-Key (or the tool's status operation); print result and receipt."""
    res = run_client(session, lambda hs: hs.reconcile(txn))
    print(json.dumps({"transaction_id": res.transaction_id, "result": res.result,
                      "receipt": res.claims}, indent=2))  # fmt: skip
