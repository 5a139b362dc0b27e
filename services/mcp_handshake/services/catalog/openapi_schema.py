"""OpenAPI schema objects (already ``$ref``-resolved) as JSON Schema draft 2020-12."""

from __future__ import annotations

import copy
from typing import Any

__all__ = ["SchemaConverter", "Unmappable"]

#: Keys that describe documents, not values: left out of params schemas.
_DROP = {"xml", "discriminator", "externalDocs", "example", "$schema", "$id", "$comment",
         "collectionFormat", "allowEmptyValue"}  # fmt: skip
_LISTS = ("allOf", "oneOf", "anyOf", "prefixItems")
_ONE = ("items", "not", "additionalProperties", "contains", "if", "then", "else")


class Unmappable(Exception):
    """An operation that cannot become a tool; the message is the reason."""


class SchemaConverter:
    def __init__(self, v3_0: bool) -> None:
        self.v3_0 = v3_0

    def __call__(self, schema: Any) -> dict[str, Any]:
        if not isinstance(schema, dict):
            return {}
        return self._convert(schema)

    def _convert(self, s: dict[str, Any]) -> dict[str, Any]:
        if "x-recursive" in s:
            return {"description": f"recursive ({s['x-recursive']}): not checked at this depth"}
        if s.get("type") == "file":
            raise Unmappable("a file upload")
        out: dict[str, Any] = {}
        for key, value in s.items():
            if key in _DROP or key.startswith("x-") or key == "nullable":
                continue
            if key == "properties" and isinstance(value, dict):
                out[key] = {k: self._convert(v) for k, v in value.items() if isinstance(v, dict)}
            elif key in _LISTS and isinstance(value, list):
                out[key] = [self._convert(v) for v in value if isinstance(v, dict)]
            elif key in _ONE and isinstance(value, dict):
                out[key] = self._convert(value)
            else:
                out[key] = copy.deepcopy(value)
        if self.v3_0:
            _exclusive_bounds(out)
        if s.get("nullable") is True:
            out = _nullable(out)
        return out

    def object_of(self, schema: Any) -> dict[str, Any]:
        """A request body's schema as one object (``allOf`` of objects merged), else
        :class:`Unmappable`: its properties become params."""
        s = self(schema)
        if "allOf" in s and all(_objectish(p) for p in s["allOf"]):
            merged: dict[str, Any] = {"type": "object", "properties": {}, "required": []}
            for part in s["allOf"]:
                merged["properties"].update(part.get("properties") or {})
                merged["required"] += part.get("required") or []
            s = merged
        if not _objectish(s) or any(k in s for k in ("oneOf", "anyOf", "allOf")):
            kind = s.get("type") or next((k for k in ("oneOf", "anyOf", "allOf") if k in s), "any")
            raise Unmappable(f"request body is {kind}, not an object of named fields")
        return s


def _objectish(s: dict[str, Any]) -> bool:
    kind = s.get("type")
    return kind == "object" or (kind is None and "properties" in s) or kind == ["object", "null"]


def _exclusive_bounds(s: dict[str, Any]) -> None:
    for flag, bound in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        if isinstance(s.get(flag), bool):
            if s.pop(flag) and bound in s:
                s[flag] = s.pop(bound)


def _nullable(s: dict[str, Any]) -> dict[str, Any]:
    kind = s.get("type")
    if isinstance(kind, str):
        out = {**s, "type": [kind, "null"]}
        if "enum" in out:
            out["enum"] = [*out["enum"], None]
        return out
    return {"anyOf": [s, {"type": "null"}]}
