"""The console's pages: approvals, transactions and their story, live status."""

from __future__ import annotations

import json
import time
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from mcp_handshake.services.console.context import Console
from mcp_handshake.services.dev.cli._approvals import _visible
from mcp_handshake.shared.errors import HandshakeError
from mcp_handshake.shared.wire import PendingApproval

__all__ = ["page_routes"]

_TXN_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.:")


def _pending_view(a: PendingApproval, now: float) -> dict[str, Any]:
    """One pending approval as the approvals CLI shows it: the full preview as JSON text,
    the requester's own words marked and with invisible characters made visible."""
    return {
        "txn": a.transaction_id, "tool": a.tool, "sub": a.sub, "tier": a.tier,
        "preview": json.dumps(a.preview, indent=2, ensure_ascii=True),
        "preview_hash": a.preview_hash,
        "age_s": max(now - a.requested_at, 0.0) if a.requested_at else None,
        "expires_in_s": a.expires_at - now, "approvals": a.approvals, "quorum": a.quorum,
        "escalated": a.escalated,
        "agent": _visible(a.agent) if a.agent else None,
        "reason": _visible(a.reason) if a.reason else None,
    }  # fmt: skip


def _console(request: Request) -> Console:
    console: Console = request.app.state.console
    return console


def _txn(value: str) -> str:
    if not 1 <= len(value) <= 128 or not set(value) <= _TXN_CHARS:
        raise HTTPException(404)
    return value


async def home(request: Request) -> Response:
    c = _console(request)
    s = c.user(request)
    if c.is_approver(s):
        return c.redirect("/approvals")
    if c.is_auditor(s):
        return c.redirect("/transactions")
    return c.page("home.html", s)


async def approvals(request: Request) -> Response:
    c = _console(request)
    s = c.user(request)
    if not c.is_approver(s):
        return c.page("forbidden.html", s, 403, what="approvals")
    error, items = None, []
    try:
        items = await c.backend.approvals(s.token or "")
    except HandshakeError as exc:
        error = f"{exc.code}: {exc.message}"
    now = time.time()
    return c.page("approvals.html", s, items=[_pending_view(a, now) for a in items],
                  error=error)  # fmt: skip


async def decide(request: Request) -> Response:
    c = _console(request)
    s = await c.posted(request)
    if not c.is_approver(s):
        return c.page("forbidden.html", s, 403, what="approvals")
    txn = _txn(request.path_params["txn"])
    form = await request.form()
    decision = str(form.get("decision") or "")
    if decision not in {"approve", "deny"}:
        raise HTTPException(400, "decision must be approve or deny")
    reason = str(form.get("reason") or "").strip()[:500] or None
    try:
        reply = await c.backend.decide(s.token or "", s.sub or "", txn, decision, reason)
        s.flash = f"{txn}: {reply.status} ({reply.approvals}/{reply.quorum} approvals)"
    except HandshakeError as exc:
        s.flash = f"{txn}: not recorded: {exc.code}: {exc.message}"
    return c.redirect("/approvals")


async def transactions(request: Request) -> Response:
    c = _console(request)
    s = c.user(request)
    if not c.is_auditor(s):
        return c.page("forbidden.html", s, 403, what="the audit trail")
    q = {k: request.query_params.get(k, "").strip()[:128] for k in ("txn", "user", "tool")}
    rows = await c.backend.search(q["txn"], q["user"], q["tool"])
    return c.page("transactions.html", s, q=q, rows=rows)


async def story(request: Request) -> Response:
    c = _console(request)
    s = c.user(request) if request.method == "GET" else await c.posted(request)
    if not c.is_auditor(s):
        return c.page("forbidden.html", s, 403, what="the audit trail")
    txn = _txn(request.path_params["txn"])
    receipt = None
    if request.method == "POST":
        receipt = str((await request.form()).get("receipt") or "") or None
    found = await c.backend.story(txn, receipt)
    return c.page("story.html", s, story=found, fmt=_fmt_event,
                  status=200 if found.events else 404)  # fmt: skip


async def status(request: Request) -> Response:
    c = _console(request)
    s = c.user(request)
    if not c.may_see_status(s):
        return c.page("forbidden.html", s, 403, what="status")
    snap = await c.backend.status()
    return c.page("status.html", s, snap=snap, kinds=_kinds(snap, snap.get("rates", {})))


def page_routes() -> list[Route]:
    return [
        Route("/", home),
        Route("/approvals", approvals),
        Route("/approvals/{txn}/decide", decide, methods=["POST"]),
        Route("/transactions", transactions),
        Route("/transactions/{txn}", story, methods=["GET", "POST"]),
        Route("/status", status),
    ]


def _fmt_event(event: dict[str, Any]) -> dict[str, str]:
    """An event's fields as text, its time as UTC."""
    at = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(event.get("at", 0)))
    keep = ("sub", "tool", "tier", "by", "decision", "status", "detail", "ph", "rh",
            "preview_hash", "worker", "signed_by", "signature_invalid", "verdict",
            "policies", "policy_hash")  # fmt: skip
    fields = {k: ", ".join(map(str, event[k])) if isinstance(event[k], list) else str(event[k])
              for k in keep if event.get(k) not in (None, "", [])}  # fmt: skip
    return {"at": at, "kind": str(event.get("kind", "?")),
            "outcome": str(event.get("outcome", "?")), **fields}  # fmt: skip


def _kinds(snap: dict[str, Any], rates: dict[str, float]) -> list[dict[str, Any]]:
    """Workers per kind as ``status`` shows them (average latency in ms)."""
    out = []
    core = ("authorize", "execute", "executor", "approval", "audit")
    for kind in [*core, *sorted(set(snap["workers"]) - set(core))]:  # gateways too
        k = snap["workers"].get(kind)
        if k is None:
            out.append({"kind": kind, "up": 0})
            continue
        avg = k["time_ns"] / max(k["requests"], 1) / 1e6
        outcomes = ", ".join(f"{code}={n}" for code, n in sorted(k["outcomes"].items()))
        out.append({"kind": kind, "up": k["instances"], "requests": k["requests"],
                    "errors": k["errors"], "avg_ms": f"{avg:.2f}", "outcomes": outcomes,
                    "rate": f"{rates[kind]:.1f}" if kind in rates else "-"})  # fmt: skip
    return out
