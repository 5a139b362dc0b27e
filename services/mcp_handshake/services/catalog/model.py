"""The catalog file: one target's tools as data (YAML, or JSON, which YAML reads too).

```yaml
catalog: 1
target:
  name: payments
  base_url: https://api.example.com     # or set in handshake.toml [targets.payments]
  auth: {type: api_key, location: header, header: X-API-Key}
  # where the secret is (secret_env / secret_file) is the operator's: never the secret
tools:
  - name: payments.list_invoices
    description: List invoices.
    tier: internal
    params: {type: object, properties: {...}, required: [...]}   # JSON Schema
    http: {method: GET, path: /v1/invoices, params: {status: {in: query}}}
    effect: [], mask: {}, preview_mask: {}, checks: [], read_only: true
```

Every struct forbids unknown fields: a misspelt key is an error at load, never ignored.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec

from mcp_handshake.services.core.checks import ParamCheck
from mcp_handshake.services.core.config import TargetAuth

__all__ = [
    "CatalogFile",
    "HttpDecl",
    "McpDecl",
    "ParamPlace",
    "Suggestion",
    "TargetDecl",
    "ToolDecl",
    "Unmapped",
]

FORMAT_VERSION = 1
_NAME = r"^[A-Za-z][A-Za-z0-9_-]*(\.[A-Za-z0-9_-]+)*$"
ToolName = Annotated[str, msgspec.Meta(pattern=_NAME, max_length=128)]


class _Decl(
    msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True, omit_defaults=True
):
    pass


class ParamPlace(_Decl, frozen=True):
    """Where one param goes in the HTTP request, and its name there if it differs."""

    in_: Literal["path", "query", "header", "body"] = msgspec.field(name="in")
    name: str | None = None


class HttpDecl(_Decl, frozen=True):
    method: Literal["GET", "HEAD", "OPTIONS", "POST", "PUT", "PATCH", "DELETE"]
    #: A template whose ``{param}`` parts are path params.
    path: str
    #: Param -> place; a param left out goes in the path if the template names it, else
    #: the query for GET/HEAD/OPTIONS/DELETE, else the body.
    params: dict[str, ParamPlace] = msgspec.field(default_factory=dict)
    #: How body params are sent: a JSON object or an HTML form.
    body: Literal["json", "form"] = "json"


class McpDecl(_Decl, frozen=True):
    """An upstream MCP server's tool, called by name."""

    tool: str


class Suggestion(_Decl, frozen=True):
    """What an importer suggested, and why: the operator reviews it and sets ``tier``."""

    tier: str
    why: str
    effect: list[str] = msgspec.field(default_factory=list)


class ToolDecl(_Decl, frozen=True):
    name: ToolName
    description: Annotated[str, msgspec.Meta(max_length=8192)]
    tier: Literal["public", "internal", "confidential", "restricted"]
    params: dict[str, Any]
    http: HttpDecl | None = None
    mcp: McpDecl | None = None
    effect: list[str] = msgspec.field(default_factory=list)
    mask: dict[str, str] = msgspec.field(default_factory=dict)
    preview_mask: dict[str, str] = msgspec.field(default_factory=dict)
    checks: list[ParamCheck] = msgspec.field(default_factory=list)
    #: The operation changes nothing (a hint for hosts; an importer sets it from the
    #: method or the MCP ``readOnlyHint``).
    read_only: bool = False
    #: A non-idempotent HTTP method that the target de-duplicates by ``Idempotency-Key``
    #: (the transaction id): safe to send again.
    idempotent: bool = False
    suggested: Suggestion | None = None
    #: ``sha256:`` of the upstream definition this tool was imported from (drift pin).
    pin: str | None = None
    #: Where it came from upstream: an operationId or an MCP tool name.
    upstream: str | None = None


class TargetDecl(_Decl, frozen=True):
    name: Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z][A-Za-z0-9_-]*$", max_length=64)]
    base_url: str | None = None
    #: An upstream MCP server over stdio: the command executors run.
    command: list[str] | None = None
    auth: TargetAuth = msgspec.field(default_factory=TargetAuth)
    timeout_s: Annotated[float, msgspec.Meta(gt=0, le=300)] = 5.0
    #: Seconds between two drift checks of an upstream MCP server's tool list.
    watch_interval_s: Annotated[float, msgspec.Meta(ge=1, le=86400)] = 300.0


class Unmapped(_Decl, frozen=True):
    """An upstream operation the importer did not map, and why."""

    operation: str
    reason: str


class CatalogFile(_Decl, frozen=True):
    catalog: Literal[1]
    target: TargetDecl
    tools: list[ToolDecl]
    source: str | None = None
    unmapped: list[Unmapped] = msgspec.field(default_factory=list)
