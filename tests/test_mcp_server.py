"""``mcp-handshake mcp`` driven by the official MCP SDK's own client, against the real stack.

Over stdio (how hosts start it) and streamable HTTP: the listing, a call per
tier, approvals by the confirmation agent and by a human through the CLI, the
pending path with its follow-up tools, and the errors a host can meet.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import shlex
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx2
import jwt
import mcp_types as types
import pytest
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from mcp_handshake.client.mcp_server import Calls, as_mcp_tools, host_name, tool_name
from mcp_handshake.services.dev.devhome import mint_session
from mcp_handshake.services.dev.devstack import Stack
from mcp_handshake.services.dev.procs import free_port, wait_port
from mcp_handshake.shared.proofs import ProofKey
from mcp_handshake.shared.settings import write_private
from mcp_handshake.shared.wire import ToolInfo
from tests.conftest import ROOT

CLI = [sys.executable, "-m", "mcp_handshake.services.dev.cli"]
RATE = {"base": "EUR", "quote": "USD"}
TXN = "mcp-handshake/transaction_id"
RECEIPT = "mcp-handshake/receipt"
SECRET = "s3cr3t-" + "x" * 40
SECRET_HEADER = {"Authorization": f"Bearer {SECRET}"}


def server_env(stack: Stack, key: Path, session: str | None = None) -> dict[str, str]:
    """The default agent's NATS identity, and a proof key of the test's own."""
    env = {**stack.env(), "PYTHONPATH": str(ROOT), "HANDSHAKE_AGENT_KEY": str(key)}
    env.pop("HANDSHAKE_SESSION", None)
    if session:
        env["HANDSHAKE_SESSION"] = session
    return env


def bound_session(stack: Stack, key: Path, sub: str, *roles: str, ttl_s: int = 600) -> str:
    """A dev session bound (cnf.jkt) to the key at ``key``, which the server will use."""
    jkt = ProofKey.load_or_create(key).thumbprint
    return mint_session(stack.home, sub, roles=list(roles), jkt=jkt, ttl_s=ttl_s)


@contextlib.asynccontextmanager
async def over_stdio(env: dict[str, str], log: Path, *args: str) -> AsyncIterator[ClientSession]:
    params = StdioServerParameters(command=CLI[0], args=[*CLI[1:], "mcp", *args], env=env)
    with log.open("a") as errlog:
        async with stdio_client(params, errlog=errlog) as (read, write):
            async with ClientSession(read, write) as session:
                await session.initialize()
                yield session


def approve(stack: Stack, txn: str) -> None:
    """A human approver decides through the CLI (retried until the request is queued)."""
    victor = mint_session(stack.home, "victor", roles=["approver"])
    env = {**stack.env(), "PYTHONPATH": str(ROOT), "HANDSHAKE_SESSION": victor}
    deadline = time.monotonic() + 15
    while True:
        out = subprocess.run([*CLI, "approvals", "approve", txn], env=env, capture_output=True,
                             text=True, timeout=30, check=False)  # fmt: skip
        if out.returncode == 0 or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    assert out.returncode == 0, out.stderr


def text(result: types.CallToolResult) -> str:
    return " ".join(c.text for c in result.content if isinstance(c, types.TextContent))


def receipt_claims(result: types.CallToolResult) -> dict[str, Any]:
    assert not result.is_error, text(result)
    meta = result.meta or {}
    claims: dict[str, Any] = jwt.decode(meta[RECEIPT], options={"verify_signature": False})
    assert claims["txn"] == meta[TXN]
    return claims


def error_code(result: types.CallToolResult) -> str:
    assert result.is_error, result
    assert "Traceback" not in text(result)
    code: str = result.structured_content["error"]["code"]
    assert text(result).startswith(f"{code}: ")
    return code


def test_public_api_is_pinned() -> None:
    import mcp_handshake.client.mcp_server as mcp_server

    assert set(mcp_server.__all__) == {
        "HOST_NAME", "META", "Calls", "GuardedSession", "PendingStore", "ServeOptions",
        "as_mcp_tools", "build_server", "hints", "host_name", "open_client",
        "read_bearer_secret", "serve", "tool_name", "transport_security",
    }  # fmt: skip
    assert all(hasattr(mcp_server, name) for name in mcp_server.__all__)
    assert mcp_server.hints("public").read_only_hint is True
    assert mcp_server.hints("restricted").destructive_hint is True
    # The operation's own word over the tier's: an internal GET reads only.
    internal_get = mcp_server.hints("internal", True, True)
    assert internal_get.read_only_hint is True and internal_get.idempotent_hint is True
    # A target's Idempotency-Key support does not make repeating a write harmless.
    assert mcp_server.hints("internal", False, True).idempotent_hint is False
    assert mcp_server.hints("public", False, True).idempotent_hint is False
    assert mcp_server.hints("restricted", True).destructive_hint is False
    assert mcp_server.hints("restricted", False).destructive_hint is True


def test_names_map_reversibly_and_refuse_ambiguity() -> None:
    assert host_name("payments.create_invoice") == "payments__create_invoice"
    assert tool_name("payments__create_invoice") == "payments.create_invoice"
    assert host_name("a._b") == "a___b" and tool_name("a___b") == "a._b"
    for ambiguous in ("a__b", "a_.b", "has space", "x" * 65, "handshake_wait", ""):
        assert host_name(ambiguous) is None, ambiguous
    catalog = [ToolInfo(n, "d", "public", {"type": "object"}) for n in ("a.b", "a__b", "c-d")]
    tools, by_host = as_mcp_tools(catalog)
    assert [t.name for t in tools] == ["a__b", "c-d"] and by_host["a__b"].name == "a.b"


async def test_a_server_bug_is_a_short_tool_error(caplog: pytest.LogCaptureFixture) -> None:
    class Broken:
        async def submit(self, tool: str, params: dict[str, Any]) -> None:
            raise ZeroDivisionError("secret detail")

    result = await Calls(Broken()).call("payments__list_invoices", {}, no_progress)  # type: ignore[arg-type]
    assert error_code(result) == "internal" and "secret detail" not in str(result)
    assert "ZeroDivisionError" in caplog.text  # the details go to the server's log


async def no_progress(done: float, total: float | None, message: str | None) -> None:
    pass


async def test_stdio_lists_and_calls_each_tier(stack: Stack, tmp_path: Path) -> None:
    key = tmp_path / "agent.pem"
    session = bound_session(stack, key, "mcp-ann", "billing", "support", "treasury")
    async with over_stdio(server_env(stack, key, session), tmp_path / "mcp.log") as mcp:
        await each_tier(mcp, "mcp-ann")


async def test_http_lists_and_calls_each_tier(stack: Stack, tmp_path: Path) -> None:
    """The same over streamable HTTP."""
    port = free_port()
    proc = start_http_server(stack, tmp_path / "agent.pem", tmp_path / "mcp.log", port,
                             "mcp-bea", "billing", "support", "treasury")  # fmt: skip
    try:
        await asyncio.to_thread(wait_port, port, "mcp server")
        async with (
            httpx2.AsyncClient(headers=SECRET_HEADER, timeout=60) as http,
            streamable_http_client(f"http://127.0.0.1:{port}/mcp", http_client=http) as (r, w),
            ClientSession(r, w) as mcp,
        ):
            await mcp.initialize()
            await each_tier(mcp, "mcp-bea")
    finally:
        proc.terminate()
        proc.wait(10)


async def each_tier(mcp: ClientSession, sub: str) -> None:
    """List the tools; a public, an internal (proof) and a confidential (masked) call;
    bad params, unknown tools, a follow-up without a transaction."""
    listed = {t.name: t for t in (await mcp.list_tools()).tools}
    assert {"payments__get_exchange_rate", "payments__list_invoices",
            "customers__get_customer", "payments__send_payment",
            "handshake_status", "handshake_wait"} <= set(listed)  # fmt: skip
    assert "reports__run_query" not in listed  # analysts only
    rate = listed["payments__get_exchange_rate"]
    assert rate.title == "payments.get_exchange_rate" and rate.annotations is not None
    assert rate.annotations.read_only_hint is True
    assert rate.input_schema["required"] == ["base", "quote"]
    send = listed["payments__send_payment"].annotations
    assert send is not None and send.destructive_hint is True and not send.read_only_hint
    invoices = listed["payments__list_invoices"].annotations  # internal, but a GET
    assert invoices is not None and invoices.read_only_hint is True

    public = await mcp.call_tool("payments__get_exchange_rate", RATE)
    assert public.structured_content["rate"] > 0
    assert receipt_claims(public)["tool"] == "payments.get_exchange_rate"

    internal = await mcp.call_tool("payments__list_invoices", {"limit": 1})
    claims = receipt_claims(internal)
    assert claims["tier"] == "internal" and claims["sub"] == sub

    customer = await mcp.call_tool("customers__get_customer", {"customer_id": "cus_8f3k2m9q"})
    assert receipt_claims(customer)["tier"] == "confidential"
    assert customer.structured_content["card_number"] == "************4242"
    assert "4242424242424242" not in text(customer)

    assert error_code(await mcp.call_tool("payments__get_exchange_rate",
                                          {"base": "euro"})) == "invalid_params"  # fmt: skip
    assert error_code(await mcp.call_tool("nope__missing", {})) == "unknown_tool"
    assert error_code(await mcp.call_tool("bad name!", {})) == "unknown_tool"
    assert error_code(await mcp.call_tool("handshake_wait", {})) == "invalid_params"


async def test_stdio_restricted_calls_wait_with_progress(stack: Stack, tmp_path: Path) -> None:
    key = tmp_path / "agent.pem"
    session = bound_session(stack, key, "mcp-tess", "treasury")
    async with over_stdio(server_env(stack, key, session), tmp_path / "mcp.log") as mcp:
        progress: list[str] = []
        reported = asyncio.Event()

        async def on_progress(done: float, total: float | None, message: str | None) -> None:
            progress.append(message or "")
            reported.set()

        small = {"to_account": "acct_4f9d2a", "amount": 50, "currency": "EUR"}
        agent = await mcp.call_tool("payments__send_payment", small, progress_callback=on_progress)
        claims = receipt_claims(agent)
        assert [a["by"] for a in claims["approvals"]] == ["confirmation-agent"]
        assert progress and "waiting for approval" in progress[0]

        progress.clear()
        reported.clear()
        large = {**small, "amount": 500}  # above the agent's limit: a human decides
        call = asyncio.create_task(
            mcp.call_tool("payments__send_payment", large, progress_callback=on_progress)
        )
        await asyncio.wait_for(reported.wait(), 15)
        txn = re.search(r"\(([^)]+)\)$", progress[0])
        assert txn is not None
        await asyncio.to_thread(approve, stack, txn.group(1))
        human = await asyncio.wait_for(call, 30)
        claims = receipt_claims(human)
        assert claims["txn"] == txn.group(1) and claims["approvals"][0]["by"] == "victor"


def start_http_server(
    stack: Stack, key: Path, log: Path, port: int, sub: str = "mcp-hal", *roles: str
) -> subprocess.Popen[bytes]:
    """The server over streamable HTTP; its session comes from a command (a dev mint bound
    to the same agent key), and a call waits 1 s for approval."""
    role_args = [a for r in (roles or ("treasury",)) for a in ("--role", r)]
    mint = shlex.join([*CLI, "token", "mint", "--sub", sub, *role_args, "--bind-key"])
    secret = log.parent / "mcp-secret"
    if not secret.exists():
        write_private(secret, SECRET)
    args = ["mcp", "--transport", "http", "--port", str(port), "--approval-wait", "1",
            "--session-command", mint, "--secret-file", str(secret)]  # fmt: skip
    with log.open("a") as out:
        return subprocess.Popen([*CLI, *args], env=server_env(stack, key), stdout=out,
                                stderr=subprocess.STDOUT)  # fmt: skip


async def test_http_pending_approval_then_follow_up(stack: Stack, tmp_path: Path) -> None:
    port = free_port()
    proc = start_http_server(stack, tmp_path / "agent.pem", tmp_path / "mcp.log", port)
    try:
        await asyncio.to_thread(wait_port, port, "mcp server")
        async with (
            httpx2.AsyncClient(headers=SECRET_HEADER, timeout=60) as http,
            streamable_http_client(f"http://127.0.0.1:{port}/mcp", http_client=http) as (r, w),
            ClientSession(r, w) as mcp,
        ):
            await mcp.initialize()
            assert "payments__send_payment" in {t.name for t in (await mcp.list_tools()).tools}
            params = {"to_account": "acct_4f9d2a", "amount": 700, "currency": "EUR"}
            pending = await mcp.call_tool("payments__send_payment", params)
            assert not pending.is_error, text(pending)
            body = pending.structured_content
            assert body["status"] == "pending_approval" and "handshake_wait" in text(pending)
            txn = body["transaction_id"]
            assert (pending.meta or {})[TXN] == txn

            status = await mcp.call_tool("handshake_status", {"transaction_id": txn})
            assert status.structured_content["status"] == "pending_approval"
            assert status.structured_content["waiting_here"] is True

            await asyncio.to_thread(approve, stack, txn)
            done = await mcp.call_tool("handshake_wait", {"transaction_id": txn})
            assert receipt_claims(done)["txn"] == txn and done.structured_content["amount"] == 700
            again = await mcp.call_tool("handshake_wait", {"transaction_id": txn})
            assert error_code(again) == "invalid_transaction"
    finally:
        proc.terminate()
        proc.wait(10)


async def test_expired_or_missing_session(stack: Stack, tmp_path: Path) -> None:
    key = tmp_path / "agent.pem"
    expired = bound_session(stack, key, "mcp-old", "billing", ttl_s=-60)
    async with over_stdio(server_env(stack, key, expired), tmp_path / "mcp.log") as mcp:
        with pytest.raises(MCPError, match=r"^unauthenticated: "):
            await mcp.list_tools()
        refused = await mcp.call_tool("payments__get_exchange_rate", RATE)
        assert error_code(refused) == "unauthenticated"

    env = server_env(stack, key)
    env.pop("HANDSHAKE_SESSION_COMMAND", None)
    out = await asyncio.to_thread(
        subprocess.run, [*CLI, "mcp"], env=env, capture_output=True, text=True, timeout=30,
        check=False, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert out.returncode == 3 and out.stderr.startswith("unauthenticated: "), out.stderr
    assert "\n" not in out.stderr.strip()


@pytest.mark.parametrize(
    ("config", "key"),
    [("claude_desktop_config.json", "mcpServers"), ("cursor_mcp.json", "mcpServers"),
     ("vscode_mcp.json", "servers")],
)  # fmt: skip
async def test_the_shipped_host_configs_work_as_written(
    stack: Stack, tmp_path: Path, config: str, key: str
) -> None:
    """examples/mcp/<host>.json started the way its host starts it: exactly the command,
    args and env it gives (plus the host's own environment), with the project at a path
    of the test's own. Nothing else says where NATS is or who the agent is."""
    project = tmp_path / "project"
    (project / ".venv" / "bin").mkdir(parents=True)
    (project / ".venv" / "bin" / "mcp-handshake").symlink_to(Path(sys.executable).parent
                                                             / "mcp-handshake")  # fmt: skip
    (project / ".handshake").symlink_to(stack.home)

    def local(value: str) -> str:
        return value.replace("/home/me/project", str(project)).replace(
            "${workspaceFolder}", str(project))  # fmt: skip

    entry = json.loads((ROOT / "examples" / "mcp" / config).read_text())[key]["handshake"]
    env = {k: local(v) for k, v in entry["env"].items()}
    env.update(XDG_CONFIG_HOME=str(tmp_path / "config"), PYTHONPATH=str(ROOT))
    params = StdioServerParameters(command=local(entry["command"]), args=entry["args"], env=env)
    with (tmp_path / "mcp.log").open("a") as errlog:
        async with stdio_client(params, errlog=errlog) as (read, write):
            async with ClientSession(read, write) as mcp:
                await mcp.initialize()
                listed = {t.name for t in (await mcp.list_tools()).tools}
                assert "payments__list_invoices" in listed, listed
                # Internal tier: the proof is signed by the key the session is bound to.
                result = await mcp.call_tool("payments__list_invoices", {"limit": 1})
    assert not result.is_error, text(result)
    assert receipt_claims(result)["tool"] == "payments.list_invoices"
