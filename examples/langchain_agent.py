"""A LangChain agent creating an invoice through the mediator.

A scripted fake chat model stands in for the LLM, so this runs with no API key;
use a real one (``init_chat_model("openai:gpt-4.1")``) to let an LLM pick the calls.

    mcp-handshake up &
    export HANDSHAKE_SESSION=$(mcp-handshake token mint --sub alice --role billing --bind-key)
    python examples/langchain_agent.py
"""

from typing import Any

from langchain.agents import create_agent
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage

from mcp_handshake.client import SyncHandshakeClient
from mcp_handshake.client.adapters.langchain import langchain_tools

INVOICE = {"customer_id": "cus_8f3k2m9q", "amount": 250, "currency": "EUR"}


class ScriptedModel(GenericFakeChatModel):
    def bind_tools(self, tools: Any, **kw: Any) -> Any:
        return self


def main() -> None:
    call = {"name": "payments__create_invoice", "args": INVOICE, "id": "call_1"}
    model = ScriptedModel(messages=iter([AIMessage("", tool_calls=[call]), AIMessage("Done.")]))

    with SyncHandshakeClient.from_env() as hs:
        agent = create_agent(model, langchain_tools(hs))
        state = agent.invoke({"messages": [("user", "Invoice cus_8f3k2m9q 250 EUR")]})

    for message in state["messages"]:
        print(f"{message.type}: {message.content or message.tool_calls}")


if __name__ == "__main__":
    main()
