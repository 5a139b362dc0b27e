"""The nesting depth limit of request bodies (protocol.md), checked on the raw bytes.

Deeply nested JSON costs a decoder one recursion per level; msgspec stops at
Python's recursion limit with a ``RecursionError``, far deeper than any real
request. The protocol's own limit is :data:`MAX_DEPTH` arrays and objects.

The check is meant for bytes that already decoded as JSON (so every string is
terminated and the scan below is linear). Its fast path is two byte counts:
a body with at most :data:`MAX_DEPTH` opening brackets cannot be deeper,
whatever its strings hold. Only a body with more brackets is scanned: strings
removed by one regular expression, then the running bracket depth computed
over what is left.
"""

from __future__ import annotations

import itertools
import re
from array import array

__all__ = ["MAX_DEPTH", "depth", "too_deep"]

#: Most arrays and objects a request body may nest, counting the body itself.
MAX_DEPTH = 32

# A JSON string (possessive: a valid body never needs backtracking into one).
_STRING = re.compile(rb'"(?:[^"\\]++|\\.)*+"', re.DOTALL)
_NOT_BRACKET = bytes(b for b in range(256) if b not in b"[]{}")
# Openers to +1 and closers to -1 as signed bytes.
_STEP = bytes.maketrans(b"[{]}", b"\x01\x01\xff\xff")


def depth(data: bytes) -> int:
    """How deep the arrays and objects of the JSON document ``data`` nest."""
    brackets = _STRING.sub(b"", data).translate(None, _NOT_BRACKET).translate(_STEP)
    return max(itertools.accumulate(array("b", brackets)), default=0)


def too_deep(data: bytes, limit: int = MAX_DEPTH) -> bool:
    """Whether the JSON document ``data`` nests deeper than ``limit``."""
    if data.count(b"{") + data.count(b"[") <= limit:
        return False
    return depth(data) > limit
