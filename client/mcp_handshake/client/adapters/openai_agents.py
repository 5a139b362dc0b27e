"""OpenAI Agents SDK: the mediated catalog as ``FunctionTool``s (extra
``mcp-handshake[openai-agents]``).

```python
hs = SyncHandshakeClient.from_env()
agent = Agent(name="billing", tools=openai_agents_tools(hs))
result = await Runner.run(agent, "What is the EUR/USD rate?")
```
"""

from __future__ import annotations

import json
from typing import Any

from agents import FunctionTool, RunContextWrapper

from mcp_handshake.shared.wire import ToolInfo

from ._catalog import DEFAULT_APPROVAL_WAIT_S, AnyClient, MediatedTool, mediated

__all__ = ["openai_agents_tools"]


def openai_agents_tools(
    client: AnyClient,
    *,
    tools: list[ToolInfo] | None = None,
    approval_wait_s: float = DEFAULT_APPROVAL_WAIT_S,
) -> list[FunctionTool]:
    """One ``FunctionTool`` per tool this caller may use; each call is a handshake.

    The params schemas are not in OpenAI's strict subset (optional fields, ``anyOf``),
    so the tools are declared non-strict; the mediator validates every call.
    """
    return [_tool(m) for m in mediated(client, tools, approval_wait_s)]


def _tool(m: MediatedTool) -> FunctionTool:
    async def on_invoke(ctx: RunContextWrapper[Any], args: str) -> str:
        params = json.loads(args) if args else {}
        return json.dumps(await m.ainvoke(params))

    return FunctionTool(
        name=m.name,
        description=m.description,
        params_json_schema=m.schema,
        on_invoke_tool=on_invoke,
        strict_json_schema=False,
    )
