"""Result masking for confidential tools, applied before the receipt is computed.

A mask is a mapping from a path in the result to a rule. Paths are dotted
keys; ``*`` stands for every item of a list or every value of an object
(``invoices.*.email``). Rules:

* ``email``: ``jane.doe@example.com`` -> ``j***@example.com``
* ``last4``: keep the last four characters (``************4242``)
* ``partial``: keep the first two characters (``ac***``)
* ``full``: the value is replaced entirely (``[redacted]``)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["MASKERS", "apply_masks", "mask_value"]

REDACTED = "[redacted]"


def _email(v: Any) -> Any:
    if not isinstance(v, str) or "@" not in v:
        return REDACTED
    local, _, domain = v.rpartition("@")
    return f"{local[:1]}***@{domain}" if local else REDACTED


def _last4(v: Any) -> Any:
    s = str(v)
    return "*" * max(len(s) - 4, 0) + s[-4:] if len(s) > 4 else "*" * len(s)


def _partial(v: Any) -> Any:
    s = str(v)
    return s[:2] + "***" if len(s) > 4 else "***"


MASKERS: dict[str, Callable[[Any], Any]] = {
    "email": _email,
    "last4": _last4,
    "partial": _partial,
    "full": lambda v: REDACTED,
}


def mask_value(rule: str, value: Any) -> Any:
    return MASKERS[rule](value) if value is not None else None


def _apply(node: Any, parts: list[str], rule: str) -> Any:
    if not parts:
        return mask_value(rule, node)
    head, rest = parts[0], parts[1:]
    if isinstance(node, list):
        if head == "*":
            return [_apply(item, rest, rule) for item in node]
        return node
    if isinstance(node, dict):
        if head == "*":
            return {k: _apply(v, rest, rule) for k, v in node.items()}
        if head in node:
            return {**node, head: _apply(node[head], rest, rule)}
    return node


def apply_masks(result: Any, masks: Mapping[str, str]) -> Any:
    """A copy of ``result`` with every masked path replaced."""
    for path, rule in masks.items():
        if rule not in MASKERS:
            raise ValueError(f"unknown mask rule {rule!r}")
        result = _apply(result, path.split("."), rule)
    return result
