"""The Cedar schema, generated from the tool catalog, and params as Cedar values.

Entity types: ``User`` (the principal: ``roles``, ``scopes``, ``groups``; a member of
``Role::"<role>"`` and ``Group::"<group>"`` for each of its roles and groups, so
``principal in Role::"billing"`` holds exactly when ``principal.roles.contains("billing")``
does) and ``Target`` (the resource). Every registered tool is an action, member of the
groups ``target:<target>`` and ``tier:<tier>``. Each action's context types the
tool's params from their JSON Schema:

| JSON Schema | Cedar |
|---|---|
| ``string`` (and string ``enum``) | ``String`` |
| ``integer`` | ``Long`` |
| ``number`` | ``decimal`` (compare with ``.greaterThan(decimal("1000.0"))``) |
| ``boolean`` | ``Boolean`` |
| ``array`` of a type above | ``Set`` of it |
| ``object`` with ``properties`` | ``Record`` |
| nullable (``anyOf`` with ``null``) | the attribute is optional: test with ``has`` |

A param of any other shape is left out of the context: a policy naming it fails
validation. A value policy cannot compare exactly (a number with more than four
decimal places, an integer beyond 64 bits) is refused as ``invalid_params``:
policy never decides on a rounded value.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

from mcp_handshake.services.core.tools import Tool
from mcp_handshake.shared.errors import InvalidParams

__all__ = ["ParamsConverter", "cedar_schema", "converter", "group_ids", "param_types"]

_STR_SET = {"type": "Set", "element": {"type": "String"}}
_LONG_MAX = 2**63 - 1
_DEC_MAX = Decimal("922337203685477.5807")
_DEC_STEP = Decimal("0.0001")

#: normalized params -> the ``context.params`` record (raises ``InvalidParams``).
ParamsConverter = Callable[[Mapping[str, Any]], dict[str, Any]]
Convert = Callable[[str, Any], Any]


def group_ids(tool: Tool) -> tuple[str, str]:
    """The action groups a tool belongs to."""
    return f"target:{tool.target}", f"tier:{tool.tier.value}"


def _long(path: str, v: Any) -> Any:
    if isinstance(v, bool) or not isinstance(v, int) or abs(v) > _LONG_MAX:
        raise InvalidParams(f"{path}: not an integer policy can compare")
    return v


def _decimal(path: str, v: Any) -> Any:
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise InvalidParams(f"{path}: not a number")
    try:
        d = Decimal(repr(v)) if isinstance(v, float) else Decimal(v)
        exact = d.quantize(_DEC_STEP)
    except InvalidOperation:
        raise InvalidParams(f"{path}: not a number policy can compare") from None
    if exact != d or abs(d) > _DEC_MAX:
        raise InvalidParams(f"{path}: more than 4 decimal places, or too large, for policy")
    return {"__extn": {"fn": "decimal", "arg": f"{exact:f}"}}


def _same(path: str, v: Any) -> Any:
    return v


def _type(schema: Mapping[str, Any]) -> tuple[dict[str, Any], Convert, bool] | None:
    """(Cedar type, value converter, nullable) for one JSON Schema, or ``None``."""
    schema = schema.get("x-normalized", schema)
    options = schema.get("anyOf")
    if isinstance(options, list):
        real = [o for o in options if o.get("type") != "null"]
        if len(real) != 1:
            return None
        inner = _type(real[0])
        return None if inner is None else (inner[0], inner[1], len(real) < len(options))
    kind = schema.get("type")
    enum = schema.get("enum")
    if kind == "string" or (isinstance(enum, list) and all(isinstance(e, str) for e in enum)):
        return {"type": "String"}, _same, False
    if kind == "integer":
        return {"type": "Long"}, _long, False
    if kind == "number":
        return {"type": "Extension", "name": "decimal"}, _decimal, False
    if kind == "boolean":
        return {"type": "Boolean"}, _same, False
    if kind == "array" and isinstance(schema.get("items"), Mapping):
        item = _type(schema["items"])
        if item is None or item[2]:
            return None
        conv = item[1]
        return ({"type": "Set", "element": item[0]},
                lambda p, v: [conv(f"{p}[]", x) for x in v], False)  # fmt: skip
    if kind == "object" and isinstance(schema.get("properties"), Mapping):
        attrs, convert = _record(schema["properties"])
        return {"type": "Record", "attributes": attrs}, lambda p, v: convert(v, p), False
    return None


def _record(
    properties: Mapping[str, Any], only: frozenset[str] | None = None
) -> tuple[dict[str, Any], Callable[..., Any]]:
    attrs: dict[str, Any] = {}
    fields: list[tuple[str, Convert]] = []
    for name, prop in properties.items():
        if only is not None and name not in only:
            continue
        typed = _type(prop) if isinstance(prop, Mapping) else None
        if typed is None:
            continue
        cedar, conv, nullable = typed
        attrs[name] = {**cedar, "required": False} if nullable else cedar
        fields.append((name, conv))

    def convert(value: Mapping[str, Any], path: str = "") -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, conv in fields:
            v = value.get(name)
            if v is not None:
                out[name] = conv(f"{path}{name}", v)
        return out

    return attrs, convert


def param_types(tool: Tool) -> dict[str, Any]:
    """The Cedar record type of a tool's params."""
    return _record(tool.params_schema().get("properties", {}))[0]


def converter(tool: Tool, only: frozenset[str] | None = None) -> ParamsConverter:
    """Built once per tool at load: normalized params -> ``context.params`` (with only the
    params named in ``only``, when given: the ones some policy reads)."""
    convert = _record(tool.params_schema().get("properties", {}), only)[1]
    return lambda params: convert(params)


def _context(params: dict[str, Any]) -> dict[str, Any]:
    agent = {"type": "Record", "attributes": {
        "nats_user": {"type": "String", "required": False},
        "jkt": {"type": "String", "required": False},
    }}  # fmt: skip
    clock = {"type": "Record", "attributes": {
        k: {"type": "Long"} for k in ("epoch", "hour", "minute", "weekday")}}  # fmt: skip
    return {"type": "Record", "attributes": {
        "params": {"type": "Record", "attributes": params},
        "tier": {"type": "String"},
        "phase": {"type": "String"},
        "proof": {"type": "Boolean"},
        "agent": agent,
        "time": clock,
    }}  # fmt: skip


def cedar_schema(tools: Iterable[Tool]) -> dict[str, Any]:
    """The Cedar schema (JSON form) of every registered tool."""
    user = {"type": "Record", "attributes": {k: _STR_SET for k in ("roles", "scopes", "groups")}}
    actions: dict[str, Any] = {}
    for tool in tools:
        groups = group_ids(tool)
        for g in groups:
            actions.setdefault(g, {})
        actions[tool.name] = {
            "memberOf": [{"id": g} for g in groups],
            "appliesTo": {"principalTypes": ["User"], "resourceTypes": ["Target"],
                          "context": _context(param_types(tool))},
        }  # fmt: skip
    types = {"User": {"shape": user, "memberOfTypes": ["Role", "Group"]},
             "Role": {}, "Group": {}, "Target": {}}  # fmt: skip
    return {"": {"entityTypes": types, "actions": actions}}
