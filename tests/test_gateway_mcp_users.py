"""Pending calls at the gateway's ``/mcp`` belong to their user, over HTTP.

A gateway process started with a short approval wait (``--mcp-approval-wait 1``):
a restricted call of one user is left pending, another user's session tries to wait
on it and to look at it by its transaction id (the attack), and a second MCP session
of the first user finishes it once a human approved.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator

import pytest
from mcp_types import CallToolResult

from mcp_handshake.services.dev.devstack import Stack
from mcp_handshake.services.dev.procs import free_port, wait_port
from tests.conftest import AgentKey
from tests.test_gateway_mcp import DPoPAuth, mcp_client, session_for
from tests.test_mcp_server import approve, error_code, receipt_claims, text

PAYMENT = {"to_account": "acct_7c1e55", "amount": 650, "currency": "EUR"}  # a human decides


@pytest.fixture(scope="module")
def short_wait_url(stack: Stack) -> Iterator[str]:
    """A gateway whose restricted /mcp calls wait 1 s for approval, then answer pending."""
    port, health = free_port(), free_port()
    proc = stack.start_worker("gateway", port, "--port", str(port), "--health-port",
                              str(health), "--mcp-approval-wait", "1")  # fmt: skip
    try:
        wait_port(port, "gateway")
        yield f"http://127.0.0.1:{port}"
    finally:
        assert proc.popen.poll() is None, "the gateway died during the tests"
        stack.stop_proc(f"gateway-{port}")


async def test_another_user_cannot_wait_on_or_see_a_pending_call_over_http(
    stack: Stack, short_wait_url: str
) -> None:
    tom, mallory = AgentKey(), AgentKey()
    first = session_for(stack, "mcp-http-tom", "treasury", key=tom)
    async with mcp_client(short_wait_url, DPoPAuth(tom, first)) as mcp:
        pending = await mcp.call_tool("payments__send_payment", PAYMENT)
    assert pending.structured_content is not None, text(pending)
    assert pending.structured_content["status"] == "pending_approval", text(pending)
    txn = pending.structured_content["transaction_id"]

    other = session_for(stack, "mcp-http-mallory", "treasury", key=mallory)
    unknown = str(uuid.uuid4())
    async with mcp_client(short_wait_url, DPoPAuth(mallory, other)) as mcp:
        stolen = await mcp.call_tool("handshake_wait", {"transaction_id": txn})
        peek = await mcp.call_tool("handshake_status", {"transaction_id": txn})
        # What an id that names nothing gets: A's call must look exactly like that.
        none_wait = await mcp.call_tool("handshake_wait", {"transaction_id": unknown})
        none_status = await mcp.call_tool("handshake_status", {"transaction_id": unknown})
    for refused, baseline in ((stolen, none_wait), (peek, none_status)):
        assert error_code(refused) == "invalid_transaction"
        shown = _shown(refused)
        assert shown == _shown(baseline).replace(unknown, txn)
        for secret in ("acct_7c1e55", "650", "send_payment", "pending_approval", "mcp-http-tom"):
            assert secret not in shown, secret

    await asyncio.to_thread(approve, stack, txn)
    second = session_for(stack, "mcp-http-tom", "treasury", key=tom)  # a new MCP session
    async with mcp_client(short_wait_url, DPoPAuth(tom, second)) as mcp:
        done = await mcp.call_tool("handshake_wait", {"transaction_id": txn, "wait_s": 20})
    claims = receipt_claims(done)
    assert claims["txn"] == txn and claims["sub"] == "mcp-http-tom"
    assert claims["approvals"][0]["by"] == "victor"
    port = short_wait_url.rsplit(":", 1)[1]
    log = (stack.logs / f"gateway-{port}.log").read_text()
    for token in (first, other, second):
        assert token not in log and token.rsplit(".", 1)[1] not in log


def _shown(result: CallToolResult) -> str:
    """All a host sees of a tool result."""
    return text(result) + json.dumps(result.structured_content) + json.dumps(result.meta)
