"""LlamaIndex: the mediated catalog as ``FunctionTool``s (extra ``mcp-handshake[llamaindex]``).

```python
hs = SyncHandshakeClient.from_env()
agent = FunctionAgent(tools=llamaindex_tools(hs), llm=llm)
result = await agent.run("What is the EUR/USD rate?")
```
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from llama_index.core.tools import FunctionTool, ToolMetadata

from mcp_handshake.shared.wire import ToolInfo

from ._catalog import DEFAULT_APPROVAL_WAIT_S, AnyClient, MediatedTool, mediated

__all__ = ["llamaindex_tools"]


@dataclass
class _SchemaMetadata(ToolMetadata):
    """Tool metadata whose parameters are the mediator's JSON Schema as given (LlamaIndex
    otherwise derives them from a pydantic model)."""

    json_schema: dict[str, Any] | None = None

    def get_parameters_dict(self) -> dict[str, Any]:
        return dict(self.json_schema or {})


def llamaindex_tools(
    client: AnyClient,
    *,
    tools: list[ToolInfo] | None = None,
    approval_wait_s: float = DEFAULT_APPROVAL_WAIT_S,
) -> list[FunctionTool]:
    """One ``FunctionTool`` per tool this caller may use; each call is a handshake.

    ``acall`` works with either client; ``call`` needs a ``SyncHandshakeClient``.
    """
    return [_tool(m) for m in mediated(client, tools, approval_wait_s)]


def _tool(m: MediatedTool) -> FunctionTool:
    def run(**params: Any) -> dict[str, Any]:
        return m.invoke(params)

    async def arun(**params: Any) -> dict[str, Any]:
        return await m.ainvoke(params)

    metadata = _SchemaMetadata(
        description=m.description, name=m.name, fn_schema=None, json_schema=m.schema
    )
    return FunctionTool(fn=run, async_fn=arun, metadata=metadata)
