"""Upstream MCP servers for the catalog tests.

    python -m tests.support.upstream_mcp stdio STATE_DIR       # misbehaving tools, stdio
    python -m tests.support.upstream_mcp git-http REPO PORT TOKEN  # mcp-server-git over HTTP

The first serves tools whose definition the test edits under a running stack
(``STATE_DIR/echo.json``: description and schema, re-read at every ``tools/list``,
and ``notifications/tools/list_changed`` sent when it changes, unless UPSTREAM_QUIET
is set)
and tools that hang, crash, answer 10 MB, report an error or break their own output
schema. The second serves the real ``mcp-server-git`` over streamable HTTP behind a
bearer token.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import os
import sys
from pathlib import Path
from typing import Any

from mcp.server.mcpserver import MCPServer


class Notifying(MCPServer):
    """Sends ``notifications/tools/list_changed`` on a session that listed the tools
    once ``echo.json`` changes (its modification time, polled)."""

    def __init__(self, name: str, state: Path) -> None:
        super().__init__(name)
        self.state = state
        self.watchers: set[asyncio.Task[None]] = set()

    async def _handle_list_tools(self, ctx: Any, params: Any) -> Any:
        if not self.watchers and not os.environ.get("UPSTREAM_QUIET"):
            task = asyncio.create_task(self._notify_on_change(ctx.session))
            self.watchers.add(task)
        return await super()._handle_list_tools(ctx, params)

    async def _notify_on_change(self, session: Any) -> None:
        seen = (self.state / "echo.json").stat().st_mtime_ns
        while True:
            await asyncio.sleep(0.2)
            now = (self.state / "echo.json").stat().st_mtime_ns
            if now != seen:
                seen = now
                await session.send_tool_list_changed()


def misbehaving(state: Path) -> MCPServer:
    server = Notifying("upstream-test", state)

    @server.tool(name="hang", description="Never answers.")
    async def hang() -> str:
        await asyncio.sleep(3600)
        return "late"

    @server.tool(name="crash", description="Dies.")
    def crash() -> str:
        os._exit(3)

    @server.tool(name="big", description="Answers 10 MB.")
    def big() -> str:
        return "x" * (10 * 1024 * 1024)

    @server.tool(name="fail", description="Reports an error.")
    def fail() -> str:
        raise ValueError("secret-detail-must-not-leak")

    @server.tool(name="badout", description="Breaks its output schema.")
    def badout() -> dict[str, int]:
        return {"count": "many"}  # type: ignore[dict-item]

    echo = json.loads((state / "echo.json").read_text())

    @server.tool(name="echo", description=echo["description"])
    def echo_tool(text: str) -> str:
        return text

    original = server.list_tools

    async def list_tools() -> Any:  # the definition as the test left it, every time
        tools = await original()
        now = json.loads((state / "echo.json").read_text())
        for t in tools:
            if t.name == "echo":
                t.description = now["description"]
                t.input_schema = now.get("schema", t.input_schema)
        return tools

    server.list_tools = list_tools  # type: ignore[method-assign]
    return server


def git_over_http(repo: Path, port: int, token: str) -> None:
    import uvicorn
    from mcp_server_git.server import create_server

    app = create_server(repo).streamable_http_app()

    async def guarded(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            sent = dict(scope["headers"]).get(b"authorization", b"").decode()
            if not hmac.compare_digest(sent, f"Bearer {token}"):
                await send({"type": "http.response.start", "status": 401, "headers": []})
                await send({"type": "http.response.body", "body": b""})
                return
        await app(scope, receive, send)

    uvicorn.run(guarded, host="127.0.0.1", port=port, log_level="warning")


if __name__ == "__main__":
    if sys.argv[1] == "stdio":
        misbehaving(Path(sys.argv[2])).run("stdio")
    else:
        git_over_http(Path(sys.argv[2]), int(sys.argv[3]), sys.argv[4])
