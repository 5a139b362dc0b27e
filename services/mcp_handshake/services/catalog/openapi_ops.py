"""One OpenAPI operation -> one catalog tool, or the reason it cannot be one.

Input is the spec with its ``$ref``s already resolved (prance). Schemas are
turned into JSON Schema draft 2020-12 (OpenAPI 3.0's ``nullable`` and boolean
``exclusiveMinimum``, Swagger 2.0's typed params); the tier and the effect fields
are suggested, with why, for the operator to review.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from mcp_handshake.services.catalog.openapi_schema import SchemaConverter, Unmappable
from mcp_handshake.services.catalog.pins import pin_of

__all__ = ["Mapper"]

METHODS = ("get", "put", "post", "delete", "options", "head", "patch")
_READ = {"get", "head", "options"}
_JSON = re.compile(r"^application/([a-z0-9.+-]*\+)?json(;.*)?$")
_FORM = "application/x-www-form-urlencoded"
_MAX_EFFECT = 6


def snake(text: str) -> str:
    text = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", text)
    text = re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_").lower()
    return text or "op"


class Mapper:
    def __init__(
        self,
        spec: dict[str, Any],
        target: str,
        include: Sequence[str] = (),
        exclude: Sequence[str] = (),
    ) -> None:
        self.spec = spec
        self.target = target
        self.include = set(include)
        self.exclude = set(exclude)
        self.v2 = "swagger" in spec
        self.convert = SchemaConverter(v3_0=str(spec.get("openapi", "")).startswith("3.0"))
        self.names: set[str] = set()

    def run(self) -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
        tools: list[dict[str, Any]] = []
        unmapped: list[dict[str, str]] = []
        for path, item in (self.spec.get("paths") or {}).items():
            if not isinstance(item, dict):
                continue
            for method in (m for m in item if m in METHODS):
                op = item[method]
                op_id = str(op.get("operationId") or f"{method.upper()} {path}")
                skip = self._filtered(op, op_id)
                if skip:
                    unmapped.append({"operation": op_id, "reason": skip})
                    continue
                try:
                    tools.append(self._tool(path, method, item, op, op_id))
                except Unmappable as exc:
                    unmapped.append({"operation": op_id, "reason": str(exc)})
        return tools, unmapped

    def _filtered(self, op: dict[str, Any], op_id: str) -> str | None:
        keys = {op_id, *(str(t) for t in op.get("tags") or ())}
        hit = sorted(keys & self.exclude)
        if hit:
            return f"excluded (--exclude {hit[0]})"
        if self.include and not keys & self.include:
            return "not included (--include names neither its operationId nor a tag of it)"
        return None

    def _name(self, op_id: str) -> str:
        base = f"{self.target}.{snake(op_id)}"[:120]
        name, n = base, 2
        while name in self.names:
            name, n = f"{base}_{n}", n + 1
        self.names.add(name)
        return name

    def _tool(
        self, path: str, method: str, item: dict[str, Any], op: dict[str, Any], op_id: str
    ) -> dict[str, Any]:
        params = Params(self.convert)
        declared = {(p.get("name"), p.get("in")): p for p in item.get("parameters") or []}
        declared.update({(p.get("name"), p.get("in")): p for p in op.get("parameters") or []})
        for p in declared.values():
            params.add_param(p, v2=self.v2)
        if not self.v2 and op.get("requestBody"):
            params.add_body_v3(op["requestBody"])
        template = params.template(path)
        read = method in _READ
        tier, why = ("internal", f"{method.upper()} only reads") if read else (
            "restricted", f"{method.upper()} changes state at the target")  # fmt: skip
        effect = [] if read else params.effect()[:_MAX_EFFECT]
        tool: dict[str, Any] = {
            "name": self._name(op_id),
            "description": _description(op, method, path),
            "tier": tier,
            "params": params.schema(),
            "http": {
                "method": method.upper(),
                "path": template,
                "params": params.places,
                **({"body": "form"} if params.form else {}),
            },
            "effect": effect,
            "read_only": read,
            "suggested": {"tier": tier, "why": why + "; review before use", "effect": effect},
            "pin": pin_of({"method": method, "path": path, "operation": op}),
            "upstream": op_id,
        }
        return tool


def _description(op: dict[str, Any], method: str, path: str) -> str:
    parts = [str(op.get(k) or "").strip() for k in ("summary", "description")]
    parts = [p for i, p in enumerate(parts) if p and p not in parts[:i]]
    text = "\n\n".join(parts) or f"{method.upper()} {path}"
    return text[:8000]


class Params:
    """The params of one operation: their schemas, places and names on the wire."""

    def __init__(self, convert: SchemaConverter) -> None:
        self.convert = convert
        self.props: dict[str, Any] = {}
        self.required: list[str] = []
        self.places: dict[str, dict[str, str]] = {}
        self.path_names: dict[str, str] = {}
        self.form = False
        self.in_body: list[str] = []

    def _ident(self, wire: str, prefix: str = "") -> str:
        name = prefix + re.sub(r"[^A-Za-z0-9_]", "_", wire)
        if not re.match(r"[A-Za-z]", name):
            name = "p_" + name
        base, n = name, 2
        while name in self.props:
            name, n = f"{base}_{n}", n + 1
        return name

    def _put(self, wire: str, where: str, schema: dict[str, Any], required: bool) -> str:
        name = self._ident(wire, "body_" if where == "body" and wire in self.props else "")
        self.props[name] = schema
        if required:
            self.required.append(name)
        if where == "path":
            self.path_names[wire] = name
        else:
            self.places[name] = {"in": where, **({"name": wire} if wire != name else {})}
        if where == "body":
            self.in_body.append(name)
        return name

    def add_param(self, p: dict[str, Any], v2: bool) -> None:
        where, wire = p.get("in"), str(p.get("name", ""))
        if where == "cookie":
            raise Unmappable(f"cookie param {wire!r} (cookies are not sent per call)")
        if v2 and where == "body":
            self._body_schema(p.get("schema") or {}, bool(p.get("required")), form=False)
            return
        if v2 and where == "formData":
            if p.get("type") == "file":
                raise Unmappable(f"file upload param {wire!r}")
            self.form = True
            where = "body"
        if where not in {"path", "query", "header", "body"}:
            raise Unmappable(f"param {wire!r} in {where!r}")
        if not v2 and "schema" not in p:
            raise Unmappable(f"param {wire!r} has no schema (content-typed params)")
        raw = p["schema"] if not v2 else {k: v for k, v in p.items() if k not in _V2_PARAM_KEYS}
        schema = self.convert(raw)
        if p.get("description") and "description" not in schema:
            schema["description"] = str(p["description"])
        self._put(wire, where, schema, bool(p.get("required")) or where == "path")

    def add_body_v3(self, body: dict[str, Any]) -> None:
        content = body.get("content") or {}
        json_type = next((t for t in content if _JSON.match(t)), None)
        chosen = json_type or (_FORM if _FORM in content else None)
        if chosen is None:
            raise Unmappable(f"request body only as {', '.join(sorted(content)) or 'nothing'}")
        schema = (content[chosen] or {}).get("schema") or {}
        self._body_schema(schema, bool(body.get("required")), form=chosen == _FORM)

    def _body_schema(self, raw: dict[str, Any], required: bool, form: bool) -> None:
        schema = self.convert.object_of(raw)
        self.form = self.form or form
        needed = set(schema.get("required") or ()) if required else set()
        for wire, prop in (schema.get("properties") or {}).items():
            if prop.get("readOnly"):
                continue
            self._put(str(wire), "body", prop, wire in needed)

    def template(self, path: str) -> str:
        def sub(m: re.Match[str]) -> str:
            wire = m.group(1)
            if wire not in self.path_names:
                raise Unmappable(f"path template names {{{wire}}}, which no path param declares")
            return "{" + self.path_names[wire] + "}"

        return re.sub(r"\{([^{}]+)\}", sub, path)

    def schema(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": "object", "additionalProperties": False,
                               "properties": self.props}  # fmt: skip
        if self.required:
            out["required"] = self.required
        return out

    def effect(self) -> list[str]:
        path = list(self.path_names.values())
        return path + [n for n in self.in_body if n in self.required]


_V2_PARAM_KEYS = {"name", "in", "description", "required", "collectionFormat", "allowEmptyValue"}
