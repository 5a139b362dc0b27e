"""Load catalog files into the same :class:`Tool` objects as Python tool modules.

A catalog is checked whole at load, and any fault is a :class:`CatalogError` naming
the file and the tool: an unknown key, a params schema that is not JSON Schema or
lets unknown params through, a path template naming no param, an effect param the
schema lacks, a mask over an effect param.
"""

from __future__ import annotations

import copy
import re
import string
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import msgspec
import yaml

from mcp_handshake.services.catalog.compile import compile_params
from mcp_handshake.services.catalog.mcp_upstream import McpCall
from mcp_handshake.services.catalog.model import CatalogFile, HttpDecl, ToolDecl
from mcp_handshake.services.core.config import TargetConfig
from mcp_handshake.services.core.masking import MASKERS
from mcp_handshake.services.core.tools import HttpOperation, Tier, Tool

__all__ = ["MAX_CATALOG_BYTES", "Catalog", "CatalogError", "load_catalog", "load_catalogs"]

#: A catalog larger than this is refused before it is parsed.
MAX_CATALOG_BYTES = 16 * 1024 * 1024
_QUERY_METHODS = {"GET", "HEAD", "OPTIONS", "DELETE"}


class CatalogError(ValueError):
    """A catalog that cannot be loaded; the message says where and why."""


@dataclass(frozen=True, slots=True)
class Catalog:
    path: Path
    file: CatalogFile
    tools: tuple[Tool, ...]

    @property
    def target(self) -> str:
        return self.file.target.name

    def target_config(self) -> TargetConfig | None:
        """The target as the catalog declares it, if it names a base URL."""
        t = self.file.target
        if t.base_url is None and not t.command:
            return None
        return TargetConfig(
            base_url=t.base_url or "", command=t.command, auth=t.auth, timeout_s=t.timeout_s,
            watch_interval_s=t.watch_interval_s,
        )  # fmt: skip


def read_document(path: Path, limit: int = MAX_CATALOG_BYTES) -> Any:
    """A YAML or JSON file's data, refused past ``limit`` bytes or when it is no mapping."""
    try:
        size = path.stat().st_size
        if size > limit:
            raise CatalogError(f"{path}: {size} bytes, more than the {limit} allowed")
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise CatalogError(f"{path}: cannot be read as YAML or JSON: {exc}") from None
    if not isinstance(data, dict):
        raise CatalogError(f"{path}: not a mapping at the top level")
    return data


def parse_catalog(data: Any, where: str) -> CatalogFile:
    try:
        return msgspec.convert(data, CatalogFile)
    except msgspec.ValidationError as exc:
        raise CatalogError(f"{where}: {exc}") from None


def load_catalog(path: Path) -> Catalog:
    file = parse_catalog(read_document(path), str(path))
    tools = []
    for decl in file.tools:
        try:
            tools.append(build_tool(decl, file.target.name))
        except (ValueError, KeyError, TypeError) as exc:
            raise CatalogError(f"{path}: tool {decl.name!r}: {exc}") from None
    names = [t.name for t in tools]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise CatalogError(f"{path}: tools defined twice: {', '.join(twice)}")
    return Catalog(path, file, tuple(tools))


def load_catalogs(paths: Iterable[Path]) -> list[Catalog]:
    return [load_catalog(p) for p in paths]


def build_tool(decl: ToolDecl, target: str) -> Tool:
    schema = published_schema(decl.params)
    props = schema["properties"]
    for name in [*decl.effect, *(c.param for c in decl.checks)]:
        if name.split(".")[0] not in props:
            raise ValueError(f"{name!r} is no param of the tool")
    for rule in [*decl.mask.values(), *decl.preview_mask.values()]:
        if rule not in MASKERS:
            raise ValueError(f"unknown mask rule {rule!r} (known: {', '.join(sorted(MASKERS))})")
    if (decl.http is None) == (decl.mcp is None):
        raise ValueError("needs exactly one operation: http or mcp")
    operation: HttpOperation | McpCall
    if decl.mcp is not None:
        operation = McpCall(decl.mcp.tool, decl.pin)
    elif decl.http is not None:
        operation = http_operation(decl.http, schema, idempotency_key=decl.idempotent)
    return Tool(
        name=decl.name,
        description=decl.description,
        params=compile_params(decl.name, schema),
        tier=Tier(decl.tier),
        target=target,
        operation=operation,
        checks=tuple(decl.checks),
        mask=dict(decl.mask),
        preview_mask=dict(decl.preview_mask),
        effect=tuple(decl.effect),
    )


def published_schema(params: Mapping[str, Any]) -> dict[str, Any]:
    """The params schema as ``handshake.v1.tools`` publishes it (docs/protocol.md):
    unknown params refused, every optional param defaulting (to ``null`` if it names
    no default, which it then accepts)."""
    schema = copy.deepcopy(dict(params))
    if schema.get("type") != "object":
        raise ValueError("params must be a JSON Schema of type object")
    if schema.setdefault("additionalProperties", False) is not False:
        raise ValueError("params must refuse unknown params (additionalProperties: false)")
    schema.setdefault("properties", {})
    try:
        jsonschema.Draft202012Validator.check_schema(schema)
    except jsonschema.SchemaError as exc:
        raise ValueError(f"params is not a valid JSON Schema: {exc.message}") from None
    required = set(schema.get("required", ()))
    for name, prop in schema["properties"].items():
        if name not in required and "default" not in prop:
            schema["properties"][name] = {"anyOf": [prop, {"type": "null"}], "default": None}
    return schema


def http_operation(
    http: HttpDecl, schema: Mapping[str, Any], idempotency_key: bool
) -> HttpOperation:
    props = schema["properties"]
    required = set(schema.get("required", ()))
    in_path = {f for _, f, _, _ in string.Formatter().parse(http.path) if f is not None}
    places: dict[str, tuple[str, str]] = {}
    for name in props:
        place = http.params.get(name)
        default = (
            "path" if name in in_path else "query" if http.method in _QUERY_METHODS else "body"
        )
        kind = place.in_ if place is not None else default
        places[name] = (kind, place.name if place is not None and place.name else name)
    unknown = sorted(set(http.params) - set(props))
    if unknown:
        raise ValueError(f"http.params names no param: {', '.join(unknown)}")
    for f in in_path:
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", f) or places.get(f, ("",))[0] != "path":
            raise ValueError(f"path template part {{{f}}} is no path param")
        if f not in required:
            raise ValueError(f"path param {f!r} must be required")
    stray = sorted(n for n, (k, _) in places.items() if k == "path" and n not in in_path)
    if stray:
        raise ValueError(f"path params missing from the template: {', '.join(stray)}")

    def of(kind: str) -> tuple[str, ...]:
        return tuple(n for n, (k, _) in places.items() if k == kind)

    return HttpOperation(
        http.method, http.path, query=of("query"), body=of("body"), headers=of("header"),
        form=http.body == "form", idempotency_key=idempotency_key,
        wire={n: w for n, (_, w) in places.items() if w != n},
    )  # fmt: skip
