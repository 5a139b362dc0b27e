"""A CrewAI crew creating an invoice through the mediator.

CrewAI ships no fake LLM, so a scripted one (ReAct text) stands in and this runs
with no API key; use a real one (``llm="openai/gpt-4.1"``) to let an LLM decide.

    mcp-handshake up &
    export HANDSHAKE_SESSION=$(mcp-handshake token mint --sub alice --role billing --bind-key)
    python examples/crewai_agent.py
"""

import json
import os
from typing import Any

from crewai import Agent, Crew, Task
from crewai.llms.base_llm import BaseLLM
from pydantic import PrivateAttr

from mcp_handshake.client import SyncHandshakeClient
from mcp_handshake.client.adapters.crewai import crewai_tools

INVOICE = {"customer_id": "cus_8f3k2m9q", "amount": 250, "currency": "EUR"}


class ScriptedLLM(BaseLLM):
    """Asks for one invoice, then reports the tool's output."""

    _turns: int = PrivateAttr(default=0)

    def call(self, messages: Any, *args: Any, **kw: Any) -> str:
        self._turns += 1
        if self._turns == 1:
            return f"Action: payments__create_invoice\nAction Input: {json.dumps(INVOICE)}"
        observation = str(messages[-2]["content"]).rsplit("Observation: ", 1)[1]
        return f"Thought: I now know the final answer\nFinal Answer: {observation}"

    def supports_function_calling(self) -> bool:
        return False


def main() -> None:
    with SyncHandshakeClient.from_env() as hs:
        clerk = Agent(role="Billing clerk", goal="Create invoices", backstory="Careful.",
                      tools=crewai_tools(hs), llm=ScriptedLLM(model="scripted"))  # fmt: skip
        task = Task(description="Invoice cus_8f3k2m9q 250 EUR", expected_output="the answer")
        task.agent = clerk
        print(Crew(agents=[clerk], tasks=[task]).kickoff().raw)


if __name__ == "__main__":
    os.environ.setdefault("CREWAI_DISABLE_TELEMETRY", "true")
    main()
