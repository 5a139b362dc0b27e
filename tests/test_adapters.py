"""Framework adapters against the real stack: each framework's own agent loop, its own
fake model (no network, no LLM), a mediated tool call, one operation at the target and
a receipt that verifies."""

from __future__ import annotations

import ast
import asyncio
import json
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest

from mcp_handshake.client import HandshakeClient, ProofKey, SyncHandshakeClient
from mcp_handshake.client.adapters import host_name, tool_name
from mcp_handshake.services.dev.devhome import mint_session
from mcp_handshake.services.dev.devstack import Stack
from mcp_handshake.shared.hashing import canonical_json, sha256_tagged
from mcp_handshake.shared.keys import generate_private_key

from .conftest import connected

TOOL = "payments.create_invoice"
HOST = "payments__create_invoice"
INVOICE = {"customer_id": "cus_8f3k2m9q", "amount": 42, "currency": "EUR"}
PAYMENT = {"to_account": "acct_zz0002", "amount": 500, "currency": "EUR"}


def agent_args(stack: Stack, sub: str, *roles: str) -> dict[str, Any]:
    key = ProofKey(generate_private_key())
    token = mint_session(stack.home, sub, roles=list(roles), jkt=key.thumbprint)
    return {"session": token, "proof_key": key, "connect_options": stack.agent_options()}


@pytest.fixture
def hs(stack: Stack, request: pytest.FixtureRequest) -> Iterator[SyncHandshakeClient]:
    with SyncHandshakeClient(
        stack.nats_url or "", **agent_args(stack, f"fw-{request.node.name[:40]}", "billing")
    ) as client:
        yield client


@pytest.fixture
async def ahs(stack: Stack) -> AsyncIterator[HandshakeClient]:
    async with HandshakeClient(
        stack.nats_url or "", **agent_args(stack, "fw-async", "billing")
    ) as c:
        yield c


class TargetSaw:
    """The demo target's counters around a block: what the agent caused there."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack

    async def stats(self) -> dict[str, Any]:
        async with connected(self.stack) as raw:
            return await raw.target_stats()

    async def __aenter__(self) -> TargetSaw:
        self.before = await self.stats()
        return self

    async def __aexit__(self, *exc: object) -> None:
        after = await self.stats()
        self.side_effects = after["side_effects"] - self.before["side_effects"]
        self.calls = sum(after["calls"].values()) - sum(self.before["calls"].values())


def parsed(output: Any) -> dict[str, Any]:
    """A tool's output as the framework handed it back to the model."""
    if isinstance(output, dict):
        return output
    text = str(output)
    try:
        value = json.loads(text)
    except ValueError:
        value = ast.literal_eval(text)
    assert isinstance(value, dict)
    return value


def assert_one_verified_invoice(
    saw: TargetSaw, outputs: list[Any], keys: dict[str, jwt.PyJWK]
) -> None:
    assert saw.side_effects == 1 and saw.calls == 1
    assert len(outputs) == 1
    out = parsed(outputs[0])
    assert out["status"] == "ok", out
    kid = jwt.get_unverified_header(out["receipt"])["kid"]
    claims = jwt.decode(out["receipt"], keys[kid].key, algorithms=["EdDSA"])
    assert claims["txn"] == out["transaction_id"] and claims["tool"] == TOOL
    assert claims["rh"] == sha256_tagged(canonical_json(out["result"]))
    assert out["result"]["amount"] in ("42.00", 42, 42.0)


def test_names_map_reversibly() -> None:
    for name in ("payments.create_invoice", "a.b.c", "plain", "x-y.z_1"):
        assert tool_name(host_name(name)) == name
    with pytest.raises(ValueError):
        host_name("odd__name")
    with pytest.raises(ValueError):
        host_name("x" * 70)


def test_catalog_needs_a_positive_bound_and_an_async_clients_tools() -> None:
    from mcp_handshake.client.adapters._catalog import mediated

    client = HandshakeClient("nats://127.0.0.1:1", session="x")
    with pytest.raises(ValueError, match="approval_wait_s"):
        mediated(client, [], 0)
    with pytest.raises(TypeError, match="pass the catalog"):
        mediated(client, None, 1)


# -- LangChain: create_agent with a fake tool-calling chat model ---------------------


async def test_langchain_agent(stack: Stack, hs: SyncHandshakeClient) -> None:
    from langchain.agents import create_agent
    from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
    from langchain_core.messages import AIMessage, ToolMessage

    from mcp_handshake.client.adapters.langchain import langchain_tools

    class ToolCallingFake(GenericFakeChatModel):
        def bind_tools(self, tools: Any, **kw: Any) -> Any:
            return self

    model = ToolCallingFake(
        messages=iter(
            [
                AIMessage("", tool_calls=[{"name": HOST, "args": INVOICE, "id": "call_1"}]),
                AIMessage("Invoice created."),
            ]
        )
    )
    tools = langchain_tools(hs)
    assert HOST in {t.name for t in tools}
    async with TargetSaw(stack) as saw:
        state = await create_agent(model, tools).ainvoke({"messages": [("user", "invoice")]})
    outputs = [m.content for m in state["messages"] if isinstance(m, ToolMessage)]
    assert state["messages"][-1].content == "Invoice created."
    assert_one_verified_invoice(saw, outputs, hs.keys())


async def test_langchain_sync_invoke_and_pending_approval(
    stack: Stack, hs: SyncHandshakeClient
) -> None:
    """A restricted tool answers pending after its bound; handshake_wait follows up."""
    from mcp_handshake.client.adapters.langchain import langchain_tools

    with (
        SyncHandshakeClient(
            stack.nats_url or "", **agent_args(stack, "fw-payer", "treasury")
        ) as payer,
        SyncHandshakeClient(
            stack.nats_url or "", **agent_args(stack, "fw-approver", "approver")
        ) as approver,
    ):
        tools = {t.name: t for t in langchain_tools(payer, approval_wait_s=0.5)}
        assert "payments__send_payment" in tools and "handshake_wait" in tools
        async with TargetSaw(stack) as saw:
            first = tools["payments__send_payment"].invoke(PAYMENT)
            assert first["status"] == "pending_approval"
            txn = first["transaction_id"]
            again = tools["handshake_wait"].invoke({"transaction_id": txn})
            assert again == first
            approver.decide(txn, "approve", "ok")
            done = tools["handshake_wait"].invoke({"transaction_id": txn})
        assert done["status"] == "ok" and done["transaction_id"] == txn
        assert saw.side_effects == 1
        unknown = tools["handshake_wait"].invoke({"transaction_id": txn})
        assert unknown["status"] == "error" and unknown["code"] == "invalid_transaction"
        refused = tools["payments__send_payment"].invoke({**PAYMENT, "amount": -1})
        assert refused["status"] == "error" and refused["code"] == "invalid_params"


async def test_an_escalated_call_is_followed_up_with_handshake_wait(
    stack: Stack, hs: SyncHandshakeClient
) -> None:
    """No tool of a billing session is restricted, but an invoice above the policy's
    threshold needs approval: it answers pending, and handshake_wait is there for it."""
    from mcp_handshake.client.adapters.langchain import langchain_tools

    with (
        SyncHandshakeClient(
            stack.nats_url or "", **agent_args(stack, "fw-biller", "billing")
        ) as biller,
        SyncHandshakeClient(
            stack.nats_url or "", **agent_args(stack, "fw-approver2", "approver")
        ) as approver,
    ):
        tools = {t.name: t for t in langchain_tools(biller, approval_wait_s=0.5)}
        big = {"customer_id": "cus_8f3k2m9q", "amount": 5000, "currency": "EUR"}
        async with TargetSaw(stack) as saw:
            first = tools["payments__create_invoice"].invoke(big)
            assert first["status"] == "pending_approval", first
            approver.decide(first["transaction_id"], "approve", "ok")
            done = tools["handshake_wait"].invoke({"transaction_id": first["transaction_id"]})
        assert done["status"] == "ok" and done["result"]["amount"] == 5000, done
        assert saw.side_effects == 1


# -- OpenAI Agents SDK: Runner with a fake Model -------------------------------------


async def test_openai_agents_runner(stack: Stack, hs: SyncHandshakeClient) -> None:
    from agents import Agent, ModelResponse, Runner, Usage, set_tracing_disabled
    from agents.models.interface import Model
    from openai.types.responses import (
        ResponseFunctionToolCall,
        ResponseOutputMessage,
        ResponseOutputText,
    )

    from mcp_handshake.client.adapters.openai_agents import openai_agents_tools

    set_tracing_disabled(True)
    outputs: list[Any] = []

    class FakeModel(Model):
        async def get_response(
            self, system_instructions: Any, input: Any, *a: Any, **k: Any
        ) -> Any:
            items = input if isinstance(input, list) else []
            seen = [i for i in items if i.get("type") == "function_call_output"]
            if not seen:
                call = ResponseFunctionToolCall(
                    type="function_call", id="fc_1", call_id="call_1", name=HOST,
                    arguments=json.dumps(INVOICE), status="completed",
                )  # fmt: skip
                return ModelResponse(output=[call], usage=Usage(), response_id=None)
            outputs.extend(i["output"] for i in seen)
            text = ResponseOutputText(type="output_text", text="Invoice created.", annotations=[])
            msg = ResponseOutputMessage(
                type="message", id="msg_1", role="assistant", status="completed", content=[text]
            )
            return ModelResponse(output=[msg], usage=Usage(), response_id=None)

        def stream_response(self, *a: Any, **k: Any) -> Any:
            raise NotImplementedError

    agent = Agent(name="billing", model=FakeModel(), tools=openai_agents_tools(hs))
    async with TargetSaw(stack) as saw:
        result = await Runner.run(agent, "Create the invoice.")
    assert result.final_output == "Invoice created."
    assert_one_verified_invoice(saw, outputs, hs.keys())


# -- pydantic-ai: Agent with a FunctionModel, on the async client --------------------


async def test_pydantic_ai_agent(stack: Stack, ahs: HandshakeClient) -> None:
    from pydantic_ai import Agent
    from pydantic_ai.messages import ModelMessage, ModelResponse, TextPart, ToolCallPart
    from pydantic_ai.models.function import AgentInfo, FunctionModel

    from mcp_handshake.client.adapters.pydantic_ai import pydantic_ai_tools

    outputs: list[Any] = []

    def model(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        assert HOST in {t.name for t in info.function_tools}
        returns = [
            p.content
            for m in messages
            for p in m.parts
            if getattr(p, "part_kind", "") == "tool-return"
        ]
        if not returns:
            return ModelResponse(parts=[ToolCallPart(HOST, dict(INVOICE), "call_1")])
        outputs.extend(returns)
        return ModelResponse(parts=[TextPart("Invoice created.")])

    agent = Agent(FunctionModel(model), tools=pydantic_ai_tools(ahs, tools=await ahs.tools()))
    async with TargetSaw(stack) as saw:
        result = await agent.run("Create the invoice.")
    assert result.output == "Invoice created."
    assert_one_verified_invoice(saw, outputs, await ahs.keys())


# -- LlamaIndex: FunctionAgent with MockFunctionCallingLLM ---------------------------


# LlamaIndex's workflows read a deprecated pydantic attribute while collecting steps.
@pytest.mark.filterwarnings("ignore::pydantic.warnings.PydanticDeprecationWarning")
async def test_llamaindex_function_agent(stack: Stack, hs: SyncHandshakeClient) -> None:
    from llama_index.core.agent.workflow import FunctionAgent
    from llama_index.core.base.llms.types import ChatMessage, MessageRole, ToolCallBlock
    from llama_index.core.llms.mock import MockFunctionCallingLLM

    from mcp_handshake.client.adapters.llamaindex import llamaindex_tools

    outputs: list[Any] = []

    def respond(messages: list[ChatMessage], **kw: Any) -> ChatMessage:
        results = [m.content for m in messages if m.role == MessageRole.TOOL]
        if not results:
            call = ToolCallBlock(tool_call_id="call_1", tool_name=HOST, tool_kwargs=dict(INVOICE))
            return ChatMessage(role=MessageRole.ASSISTANT, blocks=[call])
        outputs.extend(results)
        return ChatMessage(role=MessageRole.ASSISTANT, content="Invoice created.")

    tools = llamaindex_tools(hs)
    schema = next(t for t in tools if t.metadata.name == HOST).metadata.get_parameters_dict()
    assert set(schema["required"]) == {"customer_id", "amount", "currency"}
    agent = FunctionAgent(tools=tools, llm=MockFunctionCallingLLM(response_generator=respond))
    async with TargetSaw(stack) as saw:
        result = await agent.run("Create the invoice.")
    assert "Invoice created." in str(result)
    assert_one_verified_invoice(saw, outputs, hs.keys())


# -- CrewAI: a Crew with a scripted LLM (ReAct text; CrewAI ships no fake LLM) ---------


# CrewAI reads its own deprecated fields while setting up an agent.
# CrewAI's package layout warns while it is imported.
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.filterwarnings("ignore::ImportWarning")
async def test_crewai_crew(
    stack: Stack, hs: SyncHandshakeClient, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    if "crewai" not in os.environ.get("HANDSHAKE_REQUIRE_FRAMEWORKS", ""):
        pytest.importorskip("crewai", reason="CrewAI runs in .venv-crewai (scripts/test.sh)")
    monkeypatch.setenv("CREWAI_DISABLE_TELEMETRY", "true")
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    monkeypatch.setenv("HOME", str(tmp_path))  # CrewAI keeps state under the home directory
    from crewai import Agent, Crew, Task
    from crewai.llms.base_llm import BaseLLM
    from pydantic import PrivateAttr

    from mcp_handshake.client.adapters.crewai import crewai_tools

    class ScriptedLLM(BaseLLM):
        _turns: int = PrivateAttr(default=0)

        def call(self, messages: Any, *args: Any, **kw: Any) -> str:
            self._turns += 1
            if self._turns == 1:
                return f"Thought: invoice\nAction: {HOST}\nAction Input: {json.dumps(INVOICE)}"
            observation = str(messages[-2]["content"]).rsplit("Observation: ", 1)[1]
            return f"Thought: I now know the final answer\nFinal Answer: {observation}"

        def supports_function_calling(self) -> bool:
            return False

    tools = crewai_tools(hs)
    assert "customer_id" in next(t for t in tools if t.name == HOST).args_schema.model_fields
    clerk = Agent(
        role="Billing clerk", goal="Create invoices", backstory="Careful.",
        tools=tools, llm=ScriptedLLM(model="scripted"),
    )  # fmt: skip
    task = Task(description="Invoice cus_8f3k2m9q 42 EUR", expected_output="the tool's answer")
    task.agent = clerk
    async with TargetSaw(stack) as saw:
        result = await asyncio.to_thread(Crew(agents=[clerk], tasks=[task]).kickoff)
    assert_one_verified_invoice(saw, [result.raw], hs.keys())
    with pytest.raises(ValueError, match="validation failed"):
        next(t for t in tools if t.name == HOST).run(customer_id="cus_8f3k2m9q")
