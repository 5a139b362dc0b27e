"""Confidential-tier parameter checks, declared as data.

Checks come from the tool definition (``Tool.checks``); policy's own conditions
on params are Cedar ``forbid`` policies (docs/policy.md). They run at authorize (early
refusal) and again at execute (the authority). Every string param of a
confidential or restricted tool is also checked for the usual tricks: control
and invisible format characters (zero-width, bidi overrides), text that
Unicode compatibility normalization would change (fullwidth and other
look-alikes), and path traversal. Failures are ``validation_failed`` with a
message naming the param and the rule, never the value.
"""

from __future__ import annotations

import ast
import re
import unicodedata
from collections.abc import Iterable, Mapping
from typing import Annotated, Any

import msgspec

from mcp_handshake.shared.errors import ValidationFailed

__all__ = ["AstRule", "ParamCheck", "run_checks", "safe_text"]


class AstRule(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """An expression language: arithmetic over the listed names and calls."""

    functions: frozenset[str] = frozenset()
    names: frozenset[str] = frozenset()
    max_nodes: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 64
    max_args: Annotated[int, msgspec.Meta(ge=0, le=10)] = 1


class ParamCheck(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    param: str
    #: The whole value must match (``re.fullmatch``, ASCII classes).
    pattern: str | None = None
    #: The value must be one of these.
    allow: list[Any] | None = None
    min: float | None = None
    max: float | None = None
    max_length: Annotated[int, msgspec.Meta(ge=0)] | None = None
    ast: AstRule | None = None

    def check(self, value: Any) -> None:
        p = self.param
        if value is None:
            return
        if self.allow is not None and value not in self.allow:
            raise ValidationFailed(f"{p}: not an allowed value")
        if isinstance(value, str):
            if self.max_length is not None and len(value) > self.max_length:
                raise ValidationFailed(f"{p}: longer than {self.max_length} characters")
            if self.pattern is not None and not re.fullmatch(self.pattern, value, re.ASCII):
                raise ValidationFailed(f"{p}: does not match the required pattern")
            if self.ast is not None:
                check_expression(p, value, self.ast)
        if isinstance(value, int | float) and not isinstance(value, bool):
            if self.min is not None and value < self.min:
                raise ValidationFailed(f"{p}: below the allowed range")
            if self.max is not None and value > self.max:
                raise ValidationFailed(f"{p}: above the allowed range")


_TRAVERSAL = re.compile(r"(^|[\\/])\.\.([\\/]|$)|%2e%2e|%2f|%5c", re.IGNORECASE)


def safe_text(param: str, value: str) -> None:
    """Refuse the usual tricks in free text: see the module docstring."""
    for ch in value:
        cat = unicodedata.category(ch)
        if cat in {"Cc", "Cf", "Co", "Cs"} and ch not in "\t\n":
            raise ValidationFailed(f"{param}: contains control or invisible characters")
    if unicodedata.normalize("NFKC", value) != value:
        raise ValidationFailed(f"{param}: contains look-alike (non-normalized) characters")
    if _TRAVERSAL.search(value) or "\x00" in value:
        raise ValidationFailed(f"{param}: contains a path traversal sequence")


_ALLOWED_NODES = (
    ast.Expression,
    ast.BinOp,
    ast.UnaryOp,
    ast.Add,
    ast.Sub,
    ast.Mult,
    ast.Div,
    ast.USub,
    ast.UAdd,
    ast.Constant,
    ast.Call,
    ast.Name,
    ast.Load,
)


def check_expression(param: str, source: str, rule: AstRule) -> None:
    """Parse with ``ast`` and allow only arithmetic, the listed calls and names."""
    try:
        tree = ast.parse(source, mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        raise ValidationFailed(f"{param}: not a valid expression") from None
    nodes = list(ast.walk(tree))
    if len(nodes) > rule.max_nodes:
        raise ValidationFailed(f"{param}: expression too complex")
    called = {id(n.func) for n in nodes if isinstance(n, ast.Call)}
    for node in nodes:
        problem = _node_problem(node, rule, called)
        if problem:
            raise ValidationFailed(f"{param}: {problem}")


def _node_problem(node: ast.AST, rule: AstRule, called: set[int]) -> str | None:
    if not isinstance(node, _ALLOWED_NODES):
        return f"{type(node).__name__} is not allowed"
    if isinstance(node, ast.Constant):
        value = node.value
        if isinstance(value, bool) or not isinstance(value, int | float):
            return "only numeric constants are allowed"
    elif isinstance(node, ast.Name):
        if node.id.startswith("_") or node.id not in rule.names | rule.functions:
            return "name not allowed"
        if node.id in rule.functions and id(node) not in called:
            return "functions must be called"
    elif isinstance(node, ast.Call):
        if not isinstance(node.func, ast.Name) or node.func.id not in rule.functions:
            return "only the listed functions may be called"
        if node.keywords or len(node.args) > rule.max_args:
            return "call arguments not allowed"
        if any(not isinstance(a, ast.Name) or a.id not in rule.names for a in node.args):
            return "functions take a field name"
    return None


def _strings(value: Any, path: str) -> Iterable[tuple[str, str]]:
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, Mapping):
        for k, v in value.items():
            yield from _strings(v, f"{path}.{k}")
    elif isinstance(value, list | tuple):
        for i, v in enumerate(value):
            yield from _strings(v, f"{path}[{i}]")


def run_checks(params: Mapping[str, Any], checks: Iterable[ParamCheck]) -> None:
    """All checks over normalized params; the first failure raises ``ValidationFailed``."""
    for name, value in params.items():
        for path, text in _strings(value, name):
            safe_text(path, text)
    for check in checks:
        check.check(params.get(check.param))
