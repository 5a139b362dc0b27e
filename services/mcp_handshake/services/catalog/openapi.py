"""Import an OpenAPI 3.0/3.1 or Swagger 2.0 spec as a catalog.

The spec is read (a file or a URL, JSON or YAML, at most ``MAX_SPEC_BYTES``),
validated by openapi-spec-validator and its internal ``$ref``s resolved by
prance's resolver: no reference is followed here. (prance's own parser validates
the resolved spec, which inlines every shared schema: minutes for a large spec.)
A recursive schema is cut by prance's recursion limit; what lies past it is left
unchecked, and the param's description says so.
Each operation becomes a tool (``openapi_ops``) or an entry of ``unmapped``
with its reason; the spec's security schemes become the target's credential
declaration, its secret's source left for the operator.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import msgspec
import openapi_spec_validator
import yaml
from prance.util.resolver import RESOLVE_INTERNAL, RefResolver

from mcp_handshake.services.catalog.loader import CatalogError, parse_catalog
from mcp_handshake.services.catalog.model import CatalogFile
from mcp_handshake.services.catalog.openapi_ops import Mapper
from mcp_handshake.services.catalog.openapi_security import target_auth

__all__ = ["MAX_SPEC_BYTES", "dump_catalog", "import_openapi", "read_spec"]

#: A larger spec is refused before it is parsed.
MAX_SPEC_BYTES = 20 * 1024 * 1024
_RECURSION_LIMIT = 1


def read_spec(source: str, limit: int = MAX_SPEC_BYTES) -> str:
    """The spec's text from a file or an ``http(s)://`` URL, refused past ``limit`` bytes."""
    if source.startswith(("http://", "https://")):
        try:
            with urllib.request.urlopen(source, timeout=30) as resp:  # noqa: S310 - http(s) only
                data: bytes = resp.read(limit + 1)
        except OSError as exc:
            raise CatalogError(f"{source}: cannot be fetched: {exc}") from None
    else:
        path = Path(source)
        try:
            if path.stat().st_size > limit:
                raise CatalogError(
                    f"{source}: {path.stat().st_size} bytes, more than the {limit} allowed"
                )
            data = path.read_bytes()
        except OSError as exc:
            raise CatalogError(f"{source}: cannot be read: {exc.strerror}") from None
    if len(data) > limit:
        raise CatalogError(f"{source}: more than the {limit} bytes allowed")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise CatalogError(f"{source}: not UTF-8 text") from None


def _bounded(limit: int, ref: str, recursions: Any) -> dict[str, Any]:
    """What prance puts where a schema would recurse past the limit (``ref`` is parsed)."""
    fragment = getattr(ref, "fragment", None)
    return {"x-recursive": f"#{fragment}" if fragment else str(ref)}


def parse_text(source: str, text: str) -> Any:
    """JSON (fast) or else YAML (libyaml's loader where it is built)."""
    try:
        return json.loads(text)
    except ValueError:
        pass
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    try:
        return yaml.load(text, Loader=loader)  # noqa: S506 - a safe loader
    except yaml.YAMLError as exc:
        raise CatalogError(f"{source}: not JSON or YAML: {_first_line(exc)}") from None


def resolve(source: str, text: str) -> dict[str, Any]:
    """The spec validated (openapi-spec-validator, which follows ``$ref``s lazily) and
    then with every internal ``$ref`` resolved (prance's resolver)."""
    raw = parse_text(source, text)
    if not isinstance(raw, dict) or not ("openapi" in raw or "swagger" in raw):
        raise CatalogError(f"{source}: no 'openapi' or 'swagger' version at the top level")
    version = str(raw.get("openapi") or raw.get("swagger"))
    if not version.startswith(("2.0", "3.0", "3.1")):
        raise CatalogError(f"{source}: OpenAPI {version} is not supported (2.0, 3.0, 3.1 are)")
    try:
        openapi_spec_validator.validate(raw)
    except RecursionError:
        raise CatalogError(f"{source}: a $ref loop that resolves to no schema") from None
    except Exception as exc:
        raise CatalogError(f"{source}: not a valid OpenAPI document: {_first_line(exc)}") from None
    try:
        resolver = RefResolver(
            raw, "file:///spec", resolve_types=RESOLVE_INTERNAL,
            recursion_limit=_RECURSION_LIMIT, recursion_limit_handler=_bounded,
        )  # fmt: skip
        resolver.resolve_references()
    except RecursionError:
        raise CatalogError(f"{source}: a $ref loop that resolves to no schema") from None
    except Exception as exc:
        raise CatalogError(f"{source}: a $ref cannot be resolved: {_first_line(exc)}") from None
    spec: dict[str, Any] = resolver.specs
    return spec


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:300]


def import_openapi(
    source: str,
    target: str,
    base_url: str | None = None,
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
) -> CatalogFile:
    """A catalog for ``target`` from the spec at ``source``."""
    text = read_spec(source)
    spec = resolve(source, text)
    tools, unmapped = Mapper(spec, target, include=include, exclude=exclude).run()
    info = spec.get("info") or {}
    doc: dict[str, Any] = {
        "catalog": 1,
        "source": f"{info.get('title', '')} {info.get('version', '')}".strip() or None,
        "target": {
            "name": target,
            "base_url": base_url or _server(spec),
            "auth": target_auth(spec),
        },
        "tools": tools,
        "unmapped": unmapped,
    }
    try:
        return parse_catalog(msgspec.to_builtins(doc), source)
    except CatalogError as exc:
        raise CatalogError(f"the imported catalog is not valid (a bug): {exc}") from None


def _server(spec: dict[str, Any]) -> str | None:
    if "swagger" in spec:
        host = spec.get("host")
        if not host:
            return None
        scheme = (spec.get("schemes") or ["https"])[0]
        return f"{scheme}://{host}{spec.get('basePath', '')}".rstrip("/")
    servers = spec.get("servers") or []
    url = servers[0].get("url") if servers and isinstance(servers[0], dict) else None
    if not isinstance(url, str) or not url.startswith(("http://", "https://")) or "{" in url:
        return None  # relative or templated: the operator gives --base-url
    return url.rstrip("/")


def dump_catalog(file: CatalogFile) -> str:
    """The catalog as YAML; the same catalog always gives the same bytes."""
    data = msgspec.to_builtins(file)
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=100)
