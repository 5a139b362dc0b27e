"""``mcp-handshake audit``: verify, resume, show, export and tail the audit trail."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from nats.errors import ConnectionClosedError, NoRespondersError
from nats.js.api import DeliverPolicy
from rich.console import Console
from rich.markup import escape

from mcp_handshake.services.audit.chain import read_entries
from mcp_handshake.services.audit.checkpoints import read_published
from mcp_handshake.services.audit.control import RESUME
from mcp_handshake.services.audit.main import audit_log_path
from mcp_handshake.services.audit.verify import VerifyResult, cross_check, describe_gap, verify_log
from mcp_handshake.services.core.config import load_config
from mcp_handshake.services.core.proofs import decision_signer
from mcp_handshake.services.dev.cli._conn import nats_connection
from mcp_handshake.services.runtime.audit import STREAM, SUBJECT_PREFIX
from mcp_handshake.services.runtime.audit_group import expand
from mcp_handshake.shared.settings import Settings

console = Console()


def verify(settings: Settings, log: Path | None, against_stream: bool = False) -> int:
    """Exit 0 if the log (and, with ``against_stream``, the published checkpoints) agree."""
    cfg = load_config(settings.config_path)
    jwks = json.loads(cfg.resolve(cfg.keys.audit_public).read_text())
    path = log or audit_log_path(settings)
    result = verify_log(path, jwks)
    for gap in result.gaps:
        if "accepted" in gap:
            a = gap["accepted"]
            console.print(
                f"[yellow]GAP (accepted)[/yellow] {escape(describe_gap(gap))}; accepted by "
                f"{escape(str(a.get('by')))} at {_when(a.get('at'))}: {escape(str(a.get('note')))}"
            )
    if result.ok and against_stream:
        result = asyncio.run(_against_stream(settings, result, jwks))
    if result.ok:
        console.print(
            f"[green]OK[/green] {path}: {result.entries} entries, "
            f"{result.checkpoints} signed checkpoints, chain intact"
            + (", every published checkpoint present" if against_stream else "")
        )
        return 0
    where = f"line {result.bad_line}" if result.bad_line else "checkpoint data"
    console.print(f"[red]TAMPERED[/red] {path}: first bad {where}: {escape(result.reason)}")
    return 1


async def _against_stream(settings: Settings, result: VerifyResult, jwks: Any) -> VerifyResult:
    import jwt

    keys = {k["kid"]: jwt.PyJWK(k) for k in jwks.get("keys", [])}
    async with nats_connection(settings.as_operator()) as nc:
        published = await read_published(nc.jetstream())
    problem = cross_check(published, result.lines, result.inline, keys)
    if problem is None:
        return result
    return replace(result, ok=False, bad_line=problem[0], reason=problem[1])


def _when(at: Any) -> str:
    try:
        return datetime.fromtimestamp(float(at), UTC).isoformat(timespec="seconds")
    except (TypeError, ValueError):
        return "?"


async def resume(settings: Settings, by: str, note: str) -> int:
    """Ask the halted audit writer to record the gap as accepted and write again."""
    body = {"accept_gap": True, "by": by, "note": note}
    async with nats_connection(settings.as_operator()) as nc:
        try:
            msg = await nc.request(RESUME, json.dumps(body).encode(), timeout=5.0)
        except (TimeoutError, NoRespondersError):
            console.print("[red]no audit writer answered[/red] (is an audit worker running?)")
            return 3
    reply = json.loads(msg.data)
    if not reply.get("ok"):
        console.print(f"[red]not resumed[/red]: {escape(str(reply.get('error')))}")
        return 1
    gap = {**reply["gap"], "line": reply["accepted"]["gap_line"]}
    console.print(
        f"[green]resumed[/green]: {escape(describe_gap(gap))}; recorded as accepted by "
        f"{escape(reply['accepted']['by'])}; writing from stream sequence "
        f"{reply['accepted']['resume']}"
    )
    return 0


def _line(event: dict[str, Any]) -> str:
    at = datetime.fromtimestamp(event.get("at", 0), UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
    parts = [at, f"{event.get('kind', '?'):<20}", f"{event.get('outcome', '?'):<20}"]
    for key in ("txn", "sub", "tool", "tier", "by", "status", "detail"):
        if event.get(key):
            parts.append(f"{key}={event[key]}")
    return "  ".join(parts)


def audit_events(settings: Settings) -> list[dict[str, Any]]:
    """Every event in the local audit log, in log order."""
    return [e["body"]["event"] for e in read_entries(audit_log_path(settings))
            if e.get("kind") == "event"]  # fmt: skip


def _signed(event: dict[str, Any]) -> tuple[str, bool]:
    """How an approver's signed decision checks out: (what to print, whether it holds)."""
    signer = decision_signer(event["signature"], txn=event.get("txn") or "",
                             preview_hash=event.get("preview_hash") or "",
                             decision=event.get("decision") or "")  # fmt: skip
    if signer is None:
        return "  decision signature INVALID", False
    return f"  decision signed by key {signer} (verified)", True


def show(settings: Settings, txn: str) -> int:
    """One transaction's story; an approver's signed decision is verified on the way."""
    story = [e for e in audit_events(settings) if e.get("txn") == txn]
    if not story:
        console.print(f"no audit events for {escape(txn)}")
        return 1
    holds = True
    for event in sorted(story, key=lambda e: e.get("at", 0)):
        line = _line(event)
        if event.get("signature"):
            note, ok = _signed(event)
            line, holds = line + note, holds and ok
        console.print(escape(line))
    return 0 if holds else 1


def _since(value: str) -> float:
    try:
        return time.time() - float(value)
    except ValueError:
        stamp = datetime.fromisoformat(value)
        return (stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)).timestamp()


def export(settings: Settings, since: str) -> int:
    start = _since(since)
    for event in audit_events(settings):
        if event.get("at", 0) >= start:
            print(json.dumps(event, separators=(",", ":")))
    return 0


async def tail(settings: Settings, from_start: bool) -> None:
    async def on_msg(msg: Any) -> None:
        try:
            events = expand(msg.subject, msg.data)  # a group: each of its events
        except ValueError:
            console.print("(unreadable event)")
            return
        for event in events:
            try:
                console.print(escape(_line(event)))
            except (ValueError, AttributeError, TypeError):
                console.print("(unreadable event)")

    closed = asyncio.Event()

    async def on_closed() -> None:
        closed.set()

    policy = DeliverPolicy.ALL if from_start else DeliverPolicy.NEW
    async with nats_connection(settings.as_operator(), on_closed) as nc:
        sub = await nc.jetstream().subscribe(
            f"{SUBJECT_PREFIX}.>", stream=STREAM, cb=on_msg, ordered_consumer=True,
            deliver_policy=policy,
        )  # fmt: skip
        try:
            await closed.wait()  # until Ctrl-C or the connection is lost
            raise ConnectionClosedError
        finally:
            if not nc.is_closed:
                await sub.unsubscribe()
