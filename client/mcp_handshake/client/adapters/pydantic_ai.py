"""pydantic-ai: the mediated catalog as ``Tool``s (extra ``mcp-handshake[pydantic-ai]``).

```python
hs = SyncHandshakeClient.from_env()
agent = Agent(model, tools=pydantic_ai_tools(hs))
result = await agent.run("What is the EUR/USD rate?")
```
"""

from __future__ import annotations

from typing import Any

from pydantic_ai import Tool

from mcp_handshake.shared.wire import ToolInfo

from ._catalog import DEFAULT_APPROVAL_WAIT_S, AnyClient, MediatedTool, mediated

__all__ = ["pydantic_ai_tools"]


def pydantic_ai_tools(
    client: AnyClient,
    *,
    tools: list[ToolInfo] | None = None,
    approval_wait_s: float = DEFAULT_APPROVAL_WAIT_S,
) -> list[Tool[Any]]:
    """One ``Tool`` per tool this caller may use, declared with the mediator's params
    JSON Schema (``Tool.from_schema``); each call is a handshake."""
    return [_tool(m) for m in mediated(client, tools, approval_wait_s)]


def _tool(m: MediatedTool) -> Tool[Any]:
    async def run(**params: Any) -> dict[str, Any]:
        return await m.ainvoke(params)

    return Tool.from_schema(run, name=m.name, description=m.description, json_schema=m.schema)
