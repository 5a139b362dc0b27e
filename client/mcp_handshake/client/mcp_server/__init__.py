"""``mcp-handshake mcp``: the mediator's tools for any MCP host (Claude Desktop, Cursor, ...).

An MCP server, on the official ``mcp`` SDK, that lists the tools this session
may use (``handshake.v1.tools``) under host-safe names and runs each call as a
full handshake: authorize, proof, approval wait, execute, receipt. Needs the
``mcp`` extra (``pip install 'mcp-handshake[mcp]'``); see ``docs/mcp.md``.

```python
from mcp_handshake.client import EnvSession
from mcp_handshake.client.mcp_server import ServeOptions, serve
from mcp_handshake.shared.settings import Settings

asyncio.run(serve(Settings.from_env(), EnvSession(), ServeOptions()))
```
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from mcp_handshake.client import SessionProvider
from mcp_handshake.shared.settings import Settings

from ._calls import Calls
from ._catalog import META, as_mcp_tools, hints
from ._connect import GuardedSession, open_client
from ._names import HOST_NAME, host_name, tool_name
from ._server import build_server, run_http, run_stdio

__all__ = [
    "HOST_NAME",
    "META",
    "Calls",
    "GuardedSession",
    "ServeOptions",
    "as_mcp_tools",
    "build_server",
    "hints",
    "host_name",
    "open_client",
    "serve",
    "tool_name",
]


@dataclass(frozen=True, slots=True)
class ServeOptions:
    """How the server is reached and how long a call waits for approval."""

    #: ``stdio`` (what MCP hosts start) or ``http`` (streamable HTTP at ``/mcp``).
    transport: Literal["stdio", "http"] = "stdio"
    host: str = "127.0.0.1"
    port: int = 8765
    #: Longest a restricted call waits for approval before answering "pending".
    approval_wait_s: float = 50.0


async def serve(settings: Settings, session: SessionProvider, options: ServeOptions) -> None:
    """Connect to the mediator as ``settings`` say, then serve until the host goes away."""
    async with open_client(settings, session) as client:
        server = build_server(Calls(client, options.approval_wait_s))
        if options.transport == "http":
            await run_http(server, options.host, options.port)
        else:
            await run_stdio(server)
