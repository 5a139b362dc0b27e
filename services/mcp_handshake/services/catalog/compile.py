"""A catalog tool's params JSON Schema, compiled once at load into a pydantic model.

Catalog tools are validated exactly like Python tools: a pydantic model, built here
from the schema the catalog publishes. The common keywords become pydantic
constraints (strict JSON types, as JSON Schema means them: no coercion the schema
does not show); the protocol's numeric text form (``anyOf`` a number and a string
``pattern``, with ``x-normalized`` and ``x-decimal-places``, docs/protocol.md) is
normalized to the number it hashes as. Any other sub-schema (``oneOf``, nested
objects, ``allOf`` ...) is checked by the ``jsonschema`` library (draft 2020-12),
its validator built once here, and kept as sent.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Mapping
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any, ClassVar, Literal, Union

import jsonschema
import pydantic
from pydantic import AfterValidator, BeforeValidator, ConfigDict, Field, StrictBool, StrictStr

__all__ = ["CatalogParams", "compile_params"]

_NUMERIC = ("integer", "number")


class CatalogParams(pydantic.BaseModel):
    """Base of compiled params models: it publishes the catalog's own schema."""

    model_config = ConfigDict(
        extra="forbid", frozen=True, serialize_by_alias=True, validate_by_name=False
    )
    catalog_schema: ClassVar[dict[str, Any]] = {}

    @classmethod
    def model_json_schema(cls, *args: Any, **kwargs: Any) -> dict[str, Any]:
        return copy.deepcopy(cls.catalog_schema)


def compile_params(name: str, schema: Mapping[str, Any]) -> type[CatalogParams]:
    """A params model for ``schema`` (an object schema whose properties are the params)."""
    props: Mapping[str, Any] = schema.get("properties", {})
    required = set(schema.get("required", ()))
    fields: dict[str, Any] = {}
    for i, (param, sub) in enumerate(props.items()):
        default = ... if param in required else copy.deepcopy(sub.get("default"))
        fields[f"p{i}"] = (_annotation(sub), Field(default, alias=param))
    model = pydantic.create_model(_model_name(name), __base__=CatalogParams, **fields)
    model.catalog_schema = copy.deepcopy(dict(schema))
    return model


def _model_name(tool: str) -> str:
    return "".join(p.capitalize() for p in re.split(r"[^A-Za-z0-9]+", tool) if p) + "Params"


def _annotation(s: Mapping[str, Any]) -> Any:
    if "x-normalized" in s and "anyOf" in s:
        return _numeric_text(s)
    nullable, inner = _split_null(s)
    ann = _plain(inner) if inner is not None else None
    if ann is None:
        return _by_jsonschema(s)
    return Union[ann, None] if nullable else ann  # noqa: UP007 - a runtime type object


def _split_null(s: Mapping[str, Any]) -> tuple[bool, Mapping[str, Any] | None]:
    """``anyOf [X, {type: null}]`` or ``type: [T, "null"]`` -> (True, X)."""
    branches = s.get("anyOf")
    if isinstance(branches, list) and len(branches) == 2 and {"type": "null"} in branches:
        rest = {k: v for k, v in s.items() if k not in {"anyOf", "default"}}
        other = next(b for b in branches if b != {"type": "null"})
        return True, {**rest, **other}
    kind = s.get("type")
    if isinstance(kind, list) and "null" in kind and len(kind) == 2:
        return True, {**s, "type": next(t for t in kind if t != "null")}
    return False, s


def _plain(s: Mapping[str, Any]) -> Any:
    """The pydantic type of a simple schema, or ``None`` when ``jsonschema`` must judge it."""
    known = {"type", "title", "description", "default", "examples", "format", "enum",
             "const", "pattern", "minLength", "maxLength", "minimum", "maximum",
             "exclusiveMinimum", "exclusiveMaximum", "x-decimal-places", "items",
             "minItems", "maxItems", "deprecated", "readOnly", "writeOnly"}  # fmt: skip
    if set(s) - known:
        return None
    if "enum" in s or "const" in s:
        values = s["enum"] if "enum" in s else [s["const"]]
        if not values or any(isinstance(v, (dict, list, float)) for v in values):
            return None
        return Annotated[Literal[tuple(values)], BeforeValidator(_exact_type(values))]
    kind = s.get("type")
    if kind == "string":
        return _string(s)
    if kind == "boolean":
        return StrictBool
    if kind in _NUMERIC:
        return _number(s, kind, text=None)
    if kind == "array":
        items = _annotation(s["items"]) if isinstance(s.get("items"), dict) else Any
        return Annotated[list[items], Field(min_length=s.get("minItems"),  # type: ignore[valid-type]
                                            max_length=s.get("maxItems"))]  # fmt: skip
    return None


def _string(s: Mapping[str, Any]) -> Any:
    pattern = s.get("pattern")
    if pattern is not None:
        try:
            pydantic.TypeAdapter(Annotated[str, Field(pattern=pattern)])
        except Exception:
            return None
    return Annotated[
        StrictStr,
        Field(pattern=pattern, min_length=s.get("minLength"), max_length=s.get("maxLength")),
    ]


def _exact_type(values: list[Any]) -> Callable[[Any], Any]:
    kinds = {type(v) for v in values}

    def check(v: Any) -> Any:
        if type(v) not in kinds:  # 1 is not True, "1" is not 1
            raise ValueError("not one of the allowed values")
        return v

    return check


def _numeric_text(s: Mapping[str, Any]) -> Any:
    """``anyOf`` a number and a digit string, normalized to the number (``x-normalized``)."""
    norm = s["x-normalized"]
    texts = [b for b in s["anyOf"] if b.get("type") == "string" and "pattern" in b]
    nums = [b for b in s["anyOf"] if b.get("type") in _NUMERIC]
    if len(texts) != 1 or len(nums) != 1 or norm.get("type") not in _NUMERIC:
        raise ValueError("x-normalized: only a number or a digit string can be normalized")
    places = s.get("x-decimal-places")
    bounds = {**nums[0], **norm, **({"x-decimal-places": places} if places is not None else {})}
    return _number(bounds, norm["type"], text=texts[0]["pattern"])


def _number(s: Mapping[str, Any], kind: str, text: str | None) -> Any:
    places = s.get("x-decimal-places")
    text_re = re.compile(text) if text is not None else None
    low, high = s.get("minimum"), s.get("maximum")
    xlow, xhigh = s.get("exclusiveMinimum"), s.get("exclusiveMaximum")

    def normalize(v: Any) -> Any:
        if isinstance(v, bool) or not isinstance(v, (int, float, str)):
            raise ValueError("not a number")
        if isinstance(v, str):
            # Python's $ also matches before a final newline: "20\n" is no digit string.
            if text_re is None or "\n" in v or not text_re.search(v):
                raise ValueError("not a number")
        try:
            d = Decimal(str(v))
        except InvalidOperation:
            raise ValueError("not a number") from None
        if not d.is_finite():
            raise ValueError("not a finite number")
        if kind == "integer" and d != d.to_integral_value():
            raise ValueError("not an integer")
        if places is not None and -int(d.as_tuple().exponent) > places:
            raise ValueError(f"more than {places} decimal places")
        if (low is not None and d < Decimal(str(low))) or (
            high is not None and d > Decimal(str(high))
        ):
            raise ValueError("out of range")
        if (xlow is not None and d <= Decimal(str(xlow))) or (
            xhigh is not None and d >= Decimal(str(xhigh))
        ):
            raise ValueError("out of range")
        if kind == "integer" or (isinstance(v, int) and d == d.to_integral_value()):
            return int(d)
        return float(d) if isinstance(v, str) or places is not None else v

    return Annotated[Any, BeforeValidator(normalize)]


def _by_jsonschema(s: Mapping[str, Any]) -> Any:
    validator = jsonschema.Draft202012Validator(dict(s))
    try:
        jsonschema.Draft202012Validator.check_schema(dict(s))
    except jsonschema.SchemaError as exc:
        raise ValueError(f"not a valid JSON Schema: {exc.message}") from None

    def check(v: Any) -> Any:
        error = jsonschema.exceptions.best_match(validator.iter_errors(v))
        if error is not None:
            raise ValueError(f"{error.validator} failed")
        return v

    return Annotated[Any, AfterValidator(check)]
