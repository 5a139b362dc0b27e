"""A pydantic-ai agent creating an invoice through the mediator.

A ``FunctionModel`` stands in for the LLM, so this runs with no API key; pass a real
model name (``Agent("openai:gpt-4.1", ...)``) to let an LLM pick the calls.

    mcp-handshake up &
    export HANDSHAKE_SESSION=$(mcp-handshake token mint --sub alice --role billing --bind-key)
    python examples/pydantic_ai_agent.py
"""

from pydantic_ai import Agent
from pydantic_ai.messages import ModelMessage, ModelResponse, TextPart, ToolCallPart
from pydantic_ai.models.function import AgentInfo, FunctionModel

from mcp_handshake.client import SyncHandshakeClient
from mcp_handshake.client.adapters.pydantic_ai import pydantic_ai_tools

INVOICE = {"customer_id": "cus_8f3k2m9q", "amount": 250, "currency": "EUR"}


def scripted(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
    """Asks for one invoice, then reports the tool's output."""
    returns = [p for m in messages for p in m.parts if p.part_kind == "tool-return"]
    if not returns:
        return ModelResponse(parts=[ToolCallPart("payments__create_invoice", INVOICE)])
    return ModelResponse(parts=[TextPart(str(returns[-1].content))])


def main() -> None:
    with SyncHandshakeClient.from_env() as hs:
        agent = Agent(FunctionModel(scripted), tools=pydantic_ai_tools(hs))
        print(agent.run_sync("Invoice cus_8f3k2m9q 250 EUR").output)


if __name__ == "__main__":
    main()
