"""LangChain: the mediated catalog as ``StructuredTool``s (extra ``mcp-handshake[langchain]``).

```python
hs = SyncHandshakeClient.from_env()
tools = langchain_tools(hs)
agent = create_agent(model, tools)      # or model.bind_tools(tools)
```
"""

from __future__ import annotations

from typing import Any

from langchain_core.tools import StructuredTool

from mcp_handshake.shared.wire import ToolInfo

from ._catalog import DEFAULT_APPROVAL_WAIT_S, AnyClient, MediatedTool, mediated

__all__ = ["langchain_tools"]


def langchain_tools(
    client: AnyClient,
    *,
    tools: list[ToolInfo] | None = None,
    approval_wait_s: float = DEFAULT_APPROVAL_WAIT_S,
) -> list[StructuredTool]:
    """One ``StructuredTool`` per tool this caller may use; each call is a handshake.

    With a ``SyncHandshakeClient`` the tools work with ``invoke`` and ``ainvoke``; with
    a ``HandshakeClient`` (pass ``tools=await hs.tools()``) with ``ainvoke`` only.
    """
    return [_tool(m) for m in mediated(client, tools, approval_wait_s)]


def _tool(m: MediatedTool) -> StructuredTool:
    def run(**params: Any) -> dict[str, Any]:
        return m.invoke(params)

    async def arun(**params: Any) -> dict[str, Any]:
        return await m.ainvoke(params)

    return StructuredTool.from_function(
        func=run,
        coroutine=arun,
        name=m.name,
        description=m.description,
        args_schema=m.schema,
        infer_schema=False,
    )
