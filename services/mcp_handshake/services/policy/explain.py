"""``mcp-handshake policy explain TXN``: why a transaction was allowed, escalated or
refused, and under which policy set, told from its audit events alone."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["explain"]

_MEANING = {
    "permit": "permitted by",
    "approval": "permitted with approval by",
    "deny": "refused by",
}


def _decision(event: Mapping[str, Any]) -> str:
    verdict = str(event.get("verdict"))
    ids = [str(i) for i in event.get("policies") or []]
    if verdict == "deny" and not ids:
        why = "refused: no policy permits it (default deny)"
    else:
        why = f"{_MEANING.get(verdict, verdict)} {', '.join(ids) or '(none)'}"
    return f"{why}; policy set {event.get('policy_hash') or '?'}"


def explain(events: Iterable[Mapping[str, Any]]) -> list[str]:
    """One line per decision-bearing event, in order, then the outcome; empty if none."""
    story = sorted(events, key=lambda e: e.get("at", 0))
    lines: list[str] = []
    for event in story:
        kind, outcome = event.get("kind", "?"), event.get("outcome", "?")
        if event.get("verdict"):
            lines.append(f"{kind} ({outcome}): {_decision(event)}")
        elif kind.startswith("approval.") and event.get("decision"):
            lines.append(f"{kind}: {event['decision']} by {event.get('by') or '?'}")
    if lines and story:
        last = story[-1]
        lines.append(f"outcome: {last.get('kind')} ({last.get('outcome')})")
    return lines
