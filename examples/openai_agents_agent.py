"""An OpenAI Agents SDK agent creating an invoice through the mediator.

A scripted fake ``Model`` stands in for the LLM, so this runs with no API key; drop
``model=`` to use OpenAI's default model instead.

    mcp-handshake up &
    export HANDSHAKE_SESSION=$(mcp-handshake token mint --sub alice --role billing --bind-key)
    python examples/openai_agents_agent.py
"""

import asyncio
import json
from typing import Any

from agents import Agent, ModelResponse, Runner, Usage, set_tracing_disabled
from agents.models.interface import Model
from openai.types.responses import (
    ResponseFunctionToolCall,
    ResponseOutputMessage,
    ResponseOutputText,
)

from mcp_handshake.client import SyncHandshakeClient
from mcp_handshake.client.adapters.openai_agents import openai_agents_tools

INVOICE = {"customer_id": "cus_8f3k2m9q", "amount": 250, "currency": "EUR"}


class ScriptedModel(Model):
    """Asks for one invoice, then reports the tool's output."""

    async def get_response(self, system_instructions: Any, input: Any, **kw: Any) -> Any:
        outputs = [i["output"] for i in input if i.get("type") == "function_call_output"]
        if not outputs:
            call = ResponseFunctionToolCall(
                type="function_call", id="fc_1", call_id="call_1", status="completed",
                name="payments__create_invoice", arguments=json.dumps(INVOICE),
            )  # fmt: skip
            return ModelResponse(output=[call], usage=Usage(), response_id=None)
        text = ResponseOutputText(type="output_text", text=outputs[-1], annotations=[])
        message = ResponseOutputMessage(
            type="message", id="msg_1", role="assistant", status="completed", content=[text]
        )
        return ModelResponse(output=[message], usage=Usage(), response_id=None)

    def stream_response(self, *args: Any, **kw: Any) -> Any:
        raise NotImplementedError


async def main() -> None:
    set_tracing_disabled(True)  # no trace upload without an OpenAI key
    with SyncHandshakeClient.from_env() as hs:
        agent = Agent(name="billing", model=ScriptedModel(), tools=openai_agents_tools(hs))
        result = await Runner.run(agent, "Invoice cus_8f3k2m9q 250 EUR")
    print(result.final_output)


if __name__ == "__main__":
    asyncio.run(main())
