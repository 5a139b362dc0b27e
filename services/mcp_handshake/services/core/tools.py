"""Tool definitions and the registry that loads them.

A tool is defined once: name, description, a pydantic params model, a
sensitivity tier, and the target operation it runs. Services use the model to
validate and normalize params; clients see its JSON Schema through
``handshake.v1.tools``.
"""

from __future__ import annotations

import importlib
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import pydantic

from mcp_handshake.services.core.checks import ParamCheck
from mcp_handshake.shared.errors import InvalidParams, UnknownTool

__all__ = [
    "FunctionOperation",
    "HttpOperation",
    "Tier",
    "Tool",
    "ToolRegistry",
]


class Tier(StrEnum):
    PUBLIC = "public"
    INTERNAL = "internal"
    CONFIDENTIAL = "confidential"
    RESTRICTED = "restricted"

    @property
    def rank(self) -> int:
        return _TIER_RANK[self]

    def at_least(self, other: Tier) -> bool:
        return self.rank >= other.rank


_TIER_RANK = {Tier.PUBLIC: 0, Tier.INTERNAL: 1, Tier.CONFIDENTIAL: 2, Tier.RESTRICTED: 3}


@dataclass(frozen=True, slots=True)
class HttpOperation:
    """A call to the target's HTTP API.

    ``path`` is a template whose ``{name}`` parts are filled from params (URL
    quoted); ``query``, ``headers`` and ``body`` name the params sent as query string,
    request headers and body (a JSON object, or an HTML form if ``form``); ``wire``
    renames a param on the wire (an HTTP name that is no valid param name).
    ``None`` values are left out. ``idempotency_key`` declares that the
    target de-duplicates this call by its ``Idempotency-Key`` (the transaction id):
    repeating it under the same key has the effect of one call.
    """

    method: str
    path: str
    query: tuple[str, ...] = ()
    body: tuple[str, ...] = ()
    idempotency_key: bool = False
    headers: tuple[str, ...] = ()
    form: bool = False
    wire: Mapping[str, str] = field(default_factory=dict)

    @property
    def idempotent(self) -> bool:
        return self.method.upper() in {"GET", "HEAD", "OPTIONS", "PUT", "DELETE"}

    @property
    def repeatable(self) -> bool:
        """Safe to send again: an idempotent method, or a key the target de-duplicates."""
        return self.idempotent or self.idempotency_key


#: Custom logic: ``async def op(params, ctx) -> result`` where ``ctx`` gives the
#: target's authenticated HTTP client and the transaction id.
FunctionOperation = Callable[[Mapping[str, Any], Any], Awaitable[Any]]


@dataclass(frozen=True, slots=True)
class Tool:
    name: str
    description: str
    params: type[pydantic.BaseModel]
    tier: Tier
    target: str
    operation: HttpOperation | FunctionOperation
    #: Confidential tier and above: param checks run at authorize and execute.
    checks: tuple[ParamCheck, ...] = ()
    #: Confidential tier and above: result path -> mask rule (see ``masking``).
    mask: Mapping[str, str] = field(default_factory=dict)
    #: What human approvers see of the params: param path -> mask rule. Never a
    #: param of ``effect``.
    preview_mask: Mapping[str, str] = field(default_factory=dict)
    #: Params that determine the operation's effect (recipient, amount, currency,
    #: account): approvers always see them in full.
    effect: tuple[str, ...] = ()
    #: How a transaction left ``outcome_unknown`` is settled: a status operation run with
    #: the same params (and Idempotency-Key), answering the original call's result. Without
    #: one, an HTTP operation that is ``repeatable`` is sent again; others cannot be.
    reconcile: HttpOperation | FunctionOperation | None = None

    @property
    def reconcile_operation(self) -> HttpOperation | FunctionOperation | None:
        if self.reconcile is not None:
            return self.reconcile
        op = self.operation
        return op if isinstance(op, HttpOperation) and op.repeatable else None

    def normalize(self, raw: Mapping[str, Any]) -> dict[str, Any]:
        """Validated params with defaults filled and types coerced, as JSON values."""
        try:
            model = self.params.model_validate(raw)
        except pydantic.ValidationError as exc:
            raise InvalidParams(_describe(exc)) from None
        return model.model_dump(mode="json")

    def params_schema(self) -> dict[str, Any]:
        """The params model's JSON Schema, as ``handshake.v1.tools`` publishes it.

        It describes what :meth:`normalize` accepts and what it returns, so a
        client in any language can compute the params hash from it alone: every
        property the request leaves out is filled with its ``default`` (optional
        params default to ``null``), which the top-level ``x-normalized`` states
        by making every property required; a property's own ``x-normalized`` is
        the narrower schema of its normalized value where the accepted one is
        wider (e.g. a decimal string hashed as a JSON number), and
        ``x-decimal-places`` the most digits after the decimal point.
        """
        schema = self.params.model_json_schema()
        properties: dict[str, Any] = schema.get("properties", {})
        required = set(schema.get("required", ()))
        for name, prop in properties.items():
            if name not in required and "default" not in prop:
                raise ValueError(
                    f"tool {self.name!r}: optional param {name!r} publishes no default"
                )
        schema["x-normalized"] = {"type": "object", "required": list(properties)}
        return schema


def _describe(exc: pydantic.ValidationError) -> str:
    """A safe summary of what is wrong: field paths and rule names, never the values."""
    parts = []
    for err in exc.errors(include_url=False, include_input=False)[:5]:
        loc = ".".join(str(p) for p in err["loc"]) or "params"
        parts.append(f"{loc}: {err['type']}")
    return "params do not match the tool schema (" + "; ".join(parts) + ")"


class ToolRegistry:
    """All tools known to this deployment, loaded once at start-up."""

    def __init__(self, tools: Iterable[Tool]) -> None:
        self._tools: dict[str, Tool] = {}
        for tool in tools:
            if tool.name in self._tools:
                raise ValueError(f"tool {tool.name!r} defined twice")
            if tool.params.model_config.get("extra") != "forbid":
                raise ValueError(f"tool {tool.name!r}: params model must forbid extra fields")
            hidden = sorted(p for p in tool.preview_mask if p.split(".")[0] in tool.effect)
            if hidden:
                raise ValueError(
                    f"tool {tool.name!r}: approvers must see {', '.join(hidden)} in full "
                    "(a param of its effect)"
                )
            self._tools[tool.name] = tool
        self._schemas = {name: t.params_schema() for name, t in self._tools.items()}

    @classmethod
    def from_modules(cls, modules: Iterable[str]) -> ToolRegistry:
        tools: list[Tool] = []
        for name in modules:
            module = importlib.import_module(name)
            tools.extend(module.TOOLS)
        return cls(tools)

    def get(self, name: str) -> Tool:
        try:
            return self._tools[name]
        except KeyError:
            raise UnknownTool() from None

    def find(self, name: str) -> Tool | None:
        return self._tools.get(name)

    def schema(self, name: str) -> dict[str, Any]:
        return self._schemas[name]

    def __iter__(self) -> Any:
        return iter(self._tools.values())

    def __len__(self) -> int:
        return len(self._tools)
