"""``mcp-handshake status``: which workers are up, their load and errors, audit lag,
pending approvals, live."""

from __future__ import annotations

import asyncio
import json
import logging
from collections import defaultdict
from typing import Any

from nats.aio.client import Client as NATS
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from mcp_handshake.services.dev.cli._conn import nats_connection
from mcp_handshake.services.runtime.audit import STREAM
from mcp_handshake.services.runtime.service import discover
from mcp_handshake.services.store import redis_client
from mcp_handshake.shared.settings import Settings
from mcp_handshake.shared.subjects import Keys

log = logging.getLogger(__name__)

console = Console()


async def snapshot(settings: Settings, nc: NATS) -> dict[str, Any]:
    """Everything ``status`` shows, as data."""
    stats = await discover(nc, "STATS", 0.4)
    kinds: dict[str, dict[str, Any]] = defaultdict(
        lambda: {"instances": 0, "requests": 0, "errors": 0, "time_ns": 0, "outcomes": {}}
    )
    audit_seq = 0
    halted: dict[str, Any] | None = None
    policies: dict[str, Any] = {"hashes": [], "alarms": []}
    drift: dict[str, str] = {}
    for s in stats:
        k = kinds[s["name"].removeprefix("handshake-")]
        k["instances"] += 1
        for e in s.get("endpoints", []):
            k["requests"] += e["num_requests"]
            k["errors"] += e["num_errors"]
            k["time_ns"] += e["processing_time"]
            for code, n in ((e.get("data") or {}).get("outcomes") or {}).items():
                k["outcomes"][code] = k["outcomes"].get(code, 0) + n
        data = s.get("data") or {}
        policy = data.get("policy") or {}
        if policy.get("hash") and policy["hash"] not in policies["hashes"]:
            policies["hashes"].append(policy["hash"])
        if policy.get("alarm") and policy["alarm"] not in policies["alarms"]:
            policies["alarms"].append(policy["alarm"])
        drift.update(data.get("drift") or {})
        if data.get("role") in {"active", "halted"}:
            audit_seq = max(audit_seq, int(data.get("last_stream_seq") or 0))
        if data.get("role") == "halted":
            halted = data.get("gap") or {"reason": "halted"}
    out: dict[str, Any] = {"workers": dict(kinds), "audit_halted": halted, "policy": policies,
                          "drift": drift}  # fmt: skip
    try:
        info = await nc.jetstream().stream_info(STREAM)
        out["audit_lag"] = max(info.state.last_seq - audit_seq, 0) if audit_seq else None
        if halted is not None:  # a halted writer is never "caught up"
            out["audit_lag"] = max(out["audit_lag"] or 0, 1)
        out["audit_events"] = info.state.messages
    except Exception:
        out["audit_lag"] = out["audit_events"] = None
    redis = redis_client(settings)
    try:
        out["approvals_pending"] = int(await redis.zcard(Keys.PENDING))
        out["tokens_live"] = int(await redis.zcard(Keys.LIVE))
        out["tokens_expired"] = int(await redis.get(Keys.EXPIRED) or 0)
    except Exception as exc:  # the view shows them as unknown; say why, once per view
        log.warning("status counters unavailable from Redis: %s", type(exc).__name__)
        out["approvals_pending"] = out["tokens_live"] = out["tokens_expired"] = None
    finally:
        await redis.aclose()
    return out


def render(snap: dict[str, Any]) -> Group:
    table = Table(title="mcp-handshake workers")
    for col in ("kind", "up", "requests", "errors", "avg ms", "outcomes"):
        table.add_column(col, justify="right" if col not in {"kind", "outcomes"} else "left")
    core = ("authorize", "execute", "executor", "approval", "audit")
    for kind in (*core, *sorted(set(snap["workers"]) - set(core))):  # gateway, ...
        k = snap["workers"].get(kind)
        if k is None:
            table.add_row(kind, Text("0", style="red"), "-", "-", "-", "")
            continue
        avg = k["time_ns"] / max(k["requests"], 1) / 1e6
        outcomes = ", ".join(f"{c}={n}" for c, n in sorted(k["outcomes"].items()))
        table.add_row(kind, str(k["instances"]), str(k["requests"]), str(k["errors"]),
                      f"{avg:.2f}", outcomes)  # fmt: skip
    lag = snap.get("audit_lag")
    pending = snap.get("approvals_pending")
    issued = sum((k["outcomes"].get("ok", 0) for n, k in snap["workers"].items()
                  if n == "authorize"), 0)  # fmt: skip
    footer = Text(
        f"audit lag: {'?' if lag is None else lag} events   "
        f"pending approvals: {'?' if pending is None else pending}   "
        f"tokens live: {snap.get('tokens_live', '?')}, expired unused: "
        f"{snap.get('tokens_expired', '?')}, authorize ok: {issued}"
    )
    policy = snap.get("policy") or {}
    footer.append(f"\npolicy in force: {', '.join(policy.get('hashes') or ['?'])}")
    drift = snap.get("drift") or {}
    if drift:
        footer.append("\ncatalog drift, refused until re-imported: ", style="bold yellow")
        footer.append(", ".join(f"{t} ({c})" for t, c in sorted(drift.items())))
    parts: list[Table | Text] = [table, footer]
    for alarm in policy.get("alarms") or []:
        parts.append(Text("POLICY RELOAD REFUSED (the previous set stays in force): ",
                          style="bold red").append(alarm, style=""))  # fmt: skip
    halted = snap.get("audit_halted")
    if halted is not None:
        alarm = Text("AUDIT WRITER HALTED: ", style="bold red")
        alarm.append(f"{halted}  (see deploy/README.md; accept with `audit resume --accept-gap`)")
        return Group(*parts, alarm)
    return Group(*parts)


async def run_status(settings: Settings, once: bool, as_json: bool) -> None:
    async with nats_connection(settings.as_operator()) as nc:
        if once or as_json:
            snap = await snapshot(settings, nc)
            if as_json:
                print(json.dumps(snap))
            else:
                console.print(render(snap))
            return
        with Live(render(await snapshot(settings, nc)), console=console) as live:
            while True:
                await asyncio.sleep(2.0)
                live.update(render(await snapshot(settings, nc)))
