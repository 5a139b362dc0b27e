"""``catalog lint`` and ``catalog diff``: a catalog checked, two catalogs compared."""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

import yaml

from mcp_handshake.services.catalog.loader import load_catalog
from mcp_handshake.services.catalog.model import ToolDecl
from mcp_handshake.services.core.tools import Tier, ToolRegistry

__all__ = ["diff_catalogs", "lint_catalog"]

_WRITES = {"POST", "PUT", "PATCH", "DELETE"}


def lint_catalog(path: Path) -> list[str]:
    """Warnings about a catalog that loads (a catalog that does not raises ``CatalogError``)."""
    catalog = load_catalog(path)
    ToolRegistry(catalog.tools)  # effect params never masked for approvers, unique names
    warnings: list[str] = []
    for decl in catalog.file.tools:
        warnings += [f"{decl.name}: {w}" for w in _tool_warnings(decl)]
    for entry in catalog.file.unmapped:
        warnings.append(f"unmapped {entry.operation}: {entry.reason}")
    return warnings


def _tool_warnings(decl: ToolDecl) -> list[str]:
    out = []
    method = decl.http.method if decl.http else None
    tier = Tier(decl.tier)
    if method in _WRITES and not tier.at_least(Tier.INTERNAL):
        out.append(f"{method} at tier public: anyone with a session may change the target")
    if method == "DELETE" and not tier.at_least(Tier.RESTRICTED):
        out.append(f"DELETE at tier {tier}: deletions usually need approval (restricted)")
    if decl.read_only and method in _WRITES:
        out.append(f"read_only, but {method} is a writing method")
    if decl.suggested is not None and Tier(decl.suggested.tier).rank > tier.rank:
        out.append(f"tier {tier} is below the suggested {decl.suggested.tier}")
    if tier == Tier.RESTRICTED and not decl.effect:
        out.append("restricted with no effect fields: approvers may not see what it does")
    if (decl.mask or decl.checks) and not tier.at_least(Tier.CONFIDENTIAL):
        out.append("masks and checks run at confidential and above only")
    return out


def _tools(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    return {t["name"]: t for t in data.get("tools") or [] if isinstance(t, dict) and "name" in t}


def diff_catalogs(old: Path, new: Path) -> list[str]:
    """Tools added, removed and changed, each change as a unified diff of the tool."""
    before, after = _tools(old), _tools(new)
    out = [f"+ {name} (added)" for name in after if name not in before]
    out += [f"- {name} (removed)" for name in before if name not in after]
    for name in (n for n in before if n in after and before[n] != after[n]):
        a = yaml.safe_dump(before[name], sort_keys=False, width=100).splitlines()
        b = yaml.safe_dump(after[name], sort_keys=False, width=100).splitlines()
        fields = sorted(k for k in {*before[name], *after[name]}
                        if before[name].get(k) != after[name].get(k))  # fmt: skip
        out.append(f"~ {name} (changed: {', '.join(fields)})")
        out += [f"  {line}" for line in difflib.unified_diff(a, b, "old", "new", lineterm="", n=2)]
    return out
