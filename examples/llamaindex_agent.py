"""A LlamaIndex ``FunctionAgent`` creating an invoice through the mediator.

``MockFunctionCallingLLM`` stands in for the LLM, so this runs with no API key; use a
real one (``llama_index.llms.openai.OpenAI(model="gpt-4.1")``) to let an LLM decide.

    mcp-handshake up &
    export HANDSHAKE_SESSION=$(mcp-handshake token mint --sub alice --role billing --bind-key)
    python examples/llamaindex_agent.py
"""

import asyncio
import warnings
from typing import Any

from llama_index.core.agent.workflow import FunctionAgent
from llama_index.core.base.llms.types import ChatMessage, MessageRole, ToolCallBlock
from llama_index.core.llms.mock import MockFunctionCallingLLM

from mcp_handshake.client import SyncHandshakeClient
from mcp_handshake.client.adapters.llamaindex import llamaindex_tools

INVOICE = {"customer_id": "cus_8f3k2m9q", "amount": 250, "currency": "EUR"}


def scripted(messages: list[ChatMessage], **kw: Any) -> ChatMessage:
    """Asks for one invoice, then reports the tool's output."""
    results = [m.content for m in messages if m.role == MessageRole.TOOL]
    if not results:
        call = ToolCallBlock(tool_call_id="call_1", tool_name="payments__create_invoice",
                             tool_kwargs=INVOICE)  # fmt: skip
        return ChatMessage(role=MessageRole.ASSISTANT, blocks=[call])
    return ChatMessage(role=MessageRole.ASSISTANT, content=results[-1])


async def main() -> None:
    with SyncHandshakeClient.from_env() as hs:
        llm = MockFunctionCallingLLM(response_generator=scripted)
        agent = FunctionAgent(tools=llamaindex_tools(hs), llm=llm)
        print(await agent.run("Invoice cus_8f3k2m9q 250 EUR"))


if __name__ == "__main__":
    warnings.simplefilter("ignore", DeprecationWarning)  # LlamaIndex's own pydantic use
    asyncio.run(main())
