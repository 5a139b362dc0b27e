"""Import an upstream MCP server's tools (``tools/list``) as a catalog.

``inputSchema`` becomes the params (unknown params refused); the annotations suggest
the tier (``readOnlyHint`` -> internal, ``destructiveHint`` or no hint -> restricted:
MCP presumes a tool that is not read-only destructive); the upstream description is
kept; each tool is pinned (``pins.mcp_pin``).
"""

from __future__ import annotations

import asyncio
import copy
import shlex
from collections.abc import Mapping
from typing import Any

import msgspec

from mcp_handshake.services.catalog.loader import CatalogError, build_tool, parse_catalog
from mcp_handshake.services.catalog.mcp_upstream import open_session
from mcp_handshake.services.catalog.model import CatalogFile, ToolDecl
from mcp_handshake.services.catalog.openapi_ops import snake
from mcp_handshake.services.catalog.pins import mcp_pin

__all__ = ["import_mcp", "import_mcp_async"]


async def _list(
    command: list[str] | None, url: str, timeout: float, headers: Mapping[str, str]
) -> list[Any]:
    try:
        async with asyncio.timeout(timeout), open_session(command, url, headers) as session:
            listed = await session.list_tools()
            return list(listed.tools)
    except TimeoutError:
        raise CatalogError(f"the MCP server did not list its tools within {timeout} s") from None
    except Exception as exc:
        raise CatalogError(f"the MCP server cannot be reached: {_leaf(exc)}") from None


def _leaf(exc: BaseException) -> str:
    """The name of the first error inside the task groups that wrap it (never its text,
    which may hold a URL with credentials)."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return type(exc).__name__


def _tool(t: Any, target: str) -> dict[str, Any]:
    hints = t.annotations
    read = bool(hints is not None and hints.read_only_hint)
    if read:
        tier, why = "internal", "readOnlyHint: it only reads"
    elif hints is not None and hints.destructive_hint is False:
        tier, why = "restricted", "it writes (destructiveHint false, yet not read-only)"
    else:
        tier, why = "restricted", "destructiveHint (or no hint): it may change or destroy"
    params = copy.deepcopy(dict(t.input_schema or {"type": "object"}))
    params["additionalProperties"] = False  # unknown params are refused, never passed on
    effect = [] if read else list(params.get("required") or [])
    return {
        "name": f"{target}.{snake(t.name)}", "description": t.description or t.name,
        "tier": tier, "params": params, "mcp": {"tool": t.name}, "effect": effect,
        "read_only": read, "suggested": {"tier": tier, "why": why + "; review before use",
                                         "effect": effect},
        "pin": mcp_pin(t), "upstream": t.name,
    }  # fmt: skip


def import_mcp(
    target: str,
    url: str | None = None,
    command: str | None = None,
    timeout: float = 30.0,
    bearer: str | None = None,
) -> CatalogFile:
    """A catalog for ``target`` from the MCP server at ``url`` (sending ``bearer``, a
    token, if given) or run by ``command``."""
    return asyncio.run(import_mcp_async(target, url, command, timeout, bearer))


async def import_mcp_async(
    target: str,
    url: str | None = None,
    command: str | None = None,
    timeout: float = 30.0,
    bearer: str | None = None,
) -> CatalogFile:
    if (url is None) == (command is None):
        raise CatalogError("give exactly one of --url or --command")
    argv = shlex.split(command) if command else None
    headers = {"Authorization": f"Bearer {bearer}"} if bearer else {}
    tools = await _list(argv, url or "", timeout, headers)
    decls, unmapped = [], []
    for t in sorted(tools, key=lambda t: t.name):
        decl = _tool(t, target)
        try:
            build_tool(msgspec.convert(decl, ToolDecl), target)
        except (ValueError, msgspec.ValidationError) as exc:
            unmapped.append({"operation": t.name, "reason": f"its input schema: {exc}"})
            continue
        decls.append(decl)
    doc = {"catalog": 1, "source": f"MCP server {url or command}",
           "target": {"name": target, **({"base_url": url} if url else {"command": argv})},
           "tools": decls, "unmapped": unmapped}  # fmt: skip
    return parse_catalog(doc, "the imported catalog")
