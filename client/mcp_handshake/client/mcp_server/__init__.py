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
from pathlib import Path
from typing import Literal

from mcp_handshake.client import SessionProvider
from mcp_handshake.shared.settings import Settings, default_agent_key

from ._calls import Calls
from ._catalog import META, as_mcp_tools, hints
from ._connect import GuardedSession, open_client
from ._names import HOST_NAME, host_name, tool_name
from ._pending import PendingStore
from ._server import (
    build_server,
    read_bearer_secret,
    run_http,
    run_stdio,
    transport_security,
)

__all__ = [
    "HOST_NAME",
    "META",
    "Calls",
    "GuardedSession",
    "PendingStore",
    "ServeOptions",
    "as_mcp_tools",
    "build_server",
    "hints",
    "host_name",
    "open_client",
    "read_bearer_secret",
    "serve",
    "tool_name",
    "transport_security",
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
    #: HTTP only, required: a file (0600, this user's) holding the bearer secret clients
    #: must send.
    secret_file: Path | None = None
    #: HTTP only: Host names clients use; required to listen on a non-loopback address.
    allowed_hosts: tuple[str, ...] = ()


async def serve(settings: Settings, session: SessionProvider, options: ServeOptions) -> None:
    """Connect to the mediator as ``settings`` say, then serve until the host goes away.
    ``ValueError`` (before connecting) for an HTTP transport without a usable bearer
    secret, or on a non-loopback address without ``allowed_hosts``."""
    secret = ""
    if options.transport == "http":
        if options.secret_file is None:
            raise ValueError("the HTTP transport needs --secret-file (a bearer secret, 0600)")
        secret = read_bearer_secret(options.secret_file)
        transport_security(options.host, options.allowed_hosts)  # refuses before connecting
    # Pending calls beside the agent key: the user's own, found by a later process too.
    pending = PendingStore((settings.agent_key or default_agent_key({})).parent / "pending")
    async with open_client(settings, session) as client:
        server = build_server(
            Calls(client, options.approval_wait_s, pending, GuardedSession(session))
        )
        if options.transport == "http":
            await run_http(server, options.host, options.port, secret, options.allowed_hosts)
        else:
            await run_stdio(server)
