"""CrewAI tools creating an invoice through the mediator.

CrewAI ships no fake LLM, so this runs a tool the way a CrewAI agent does (``run``)
and needs no API key. In a crew: ``Agent(role=..., goal=..., tools=crewai_tools(hs))``.

    mcp-handshake up &
    export HANDSHAKE_SESSION=$(mcp-handshake token mint --sub alice --role billing --bind-key)
    python examples/crewai_tools.py
"""

from mcp_handshake.client import SyncHandshakeClient
from mcp_handshake.client.adapters.crewai import crewai_tools


def main() -> None:
    with SyncHandshakeClient.from_env() as hs:
        tools = {tool.name: tool for tool in crewai_tools(hs)}
        print(tools["payments__create_invoice"].run(
            customer_id="cus_8f3k2m9q", amount=250, currency="EUR"
        ))  # fmt: skip


if __name__ == "__main__":
    main()
