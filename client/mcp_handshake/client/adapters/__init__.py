"""Framework adapters: the mediated catalog as each agent framework's native tools.

One module per framework, each an optional extra; import the one you use::

    from mcp_handshake.client.adapters.langchain import langchain_tools      # [langchain]
    from mcp_handshake.client.adapters.crewai import crewai_tools            # [crewai]
    from mcp_handshake.client.adapters.openai_agents import openai_agents_tools  # [openai-agents]
    from mcp_handshake.client.adapters.pydantic_ai import pydantic_ai_tools  # [pydantic-ai]
    from mcp_handshake.client.adapters.llamaindex import llamaindex_tools    # [llamaindex]

Each takes a ``SyncHandshakeClient`` (works in sync and async frameworks alike) or a
connected ``HandshakeClient`` with its catalog (``tools=await hs.tools()``). Names,
result shapes and the bounded approval wait are described in ``_catalog``.
"""

from ._catalog import DEFAULT_APPROVAL_WAIT_S, WAIT_TOOL, MediatedTool, host_name, tool_name

__all__ = ["DEFAULT_APPROVAL_WAIT_S", "WAIT_TOOL", "MediatedTool", "host_name", "tool_name"]
