"""Host-safe tool names: ``payments.create_invoice`` <-> ``payments__create_invoice``.

OpenAI and Anthropic function names must match ``^[a-zA-Z0-9_-]{1,64}$``, and
mediated tool names hold dots. Each ``.`` becomes ``__``; the mapping back turns
each ``__`` into ``.``. A name is offered only when that round trip gives it back
exactly (a name with a ``__`` of its own, or a ``_`` just before a ``.``, does
not), its host name fits the pattern, and it is not one of this server's own
tools. Accepted names therefore never collide. Anything else is left out of the
listing (with a warning in the log), never renamed silently.
"""

from __future__ import annotations

import re

__all__ = ["HOST_NAME", "OWN_TOOLS", "host_name", "tool_name"]

#: What OpenAI and Anthropic accept as a function name.
HOST_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
#: This server's own tools, which no mediated tool may shadow.
OWN_TOOLS = frozenset({"handshake_status", "handshake_wait"})


def host_name(tool: str) -> str | None:
    """The host-safe name of a mediated tool, or ``None`` when it has no reversible one."""
    name = tool.replace(".", "__")
    if not HOST_NAME.fullmatch(name) or tool_name(name) != tool or name in OWN_TOOLS:
        return None
    return name


def tool_name(host: str) -> str:
    """The mediated tool a host-safe name stands for."""
    return host.replace("__", ".")
