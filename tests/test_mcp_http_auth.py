"""The local ``mcp-handshake mcp``: no unauthenticated HTTP mode, hints that do not
invite a retried write, oversized arguments named as such, and a pending call that a
new process of the same user (a one-shot stdio host) can finish.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from mcp_handshake.client import PendingCall
from mcp_handshake.client.mcp_server import PendingStore
from mcp_handshake.services.dev.devstack import Stack
from mcp_handshake.services.dev.procs import free_port, wait_port
from mcp_handshake.shared.settings import write_private
from mcp_handshake.shared.wire import Grant
from tests.test_mcp_server import (
    CLI,
    RATE,
    SECRET,
    approve,
    bound_session,
    error_code,
    over_stdio,
    receipt_claims,
    server_env,
    start_http_server,
    text,
)


def _refused(stack: Stack, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = server_env(stack, tmp_path / "agent.pem", "not-used-before-refusal")
    return subprocess.run([*CLI, "mcp", "--transport", "http", *args], env=env,
                          capture_output=True, text=True, timeout=30, check=False,
                          stdin=subprocess.DEVNULL)  # fmt: skip


@pytest.mark.parametrize("case", ["no_secret", "world_readable", "short", "missing",
                                  "public_host"])  # fmt: skip
def test_http_transport_refuses_to_start_unprotected(
    stack: Stack, tmp_path: Path, case: str
) -> None:
    secret = tmp_path / "secret"
    write_private(secret, SECRET)
    args = {
        "no_secret": [],
        "world_readable": ["--secret-file", str(secret)],
        "short": ["--secret-file", str(secret)],
        "missing": ["--secret-file", str(tmp_path / "nope")],
        "public_host": ["--secret-file", str(secret), "--host", "0.0.0.0"],  # noqa: S104
    }[case]  # fmt: skip
    if case == "world_readable":
        secret.chmod(0o644)
    if case == "short":
        write_private(secret, "short")
    out = _refused(stack, tmp_path, "--port", str(free_port()), *args)
    assert out.returncode != 0 and out.stderr.startswith("usage: "), out.stderr
    assert SECRET not in out.stderr


async def test_http_requests_without_the_secret_are_refused(stack: Stack, tmp_path: Path) -> None:
    port = free_port()
    proc = start_http_server(stack, tmp_path / "agent.pem", tmp_path / "mcp.log", port)
    init = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}
    headers = {"Accept": "application/json, text/event-stream"}
    try:
        await asyncio.to_thread(wait_port, port, "mcp server")
        async with httpx.AsyncClient() as http:
            url = f"http://127.0.0.1:{port}/mcp"
            for auth in (None, "Bearer wrong-" + "y" * 40, f"Basic {SECRET}"):
                hdrs = {**headers, **({"Authorization": auth} if auth else {})}
                refused = await http.post(url, json=init, headers=hdrs)
                assert refused.status_code == 401, auth
            ok = {**headers, "Authorization": f"Bearer {SECRET}"}
            foreign = await http.post(url, json=init, headers={**ok, "Host": "evil.example"})
            assert foreign.status_code in (400, 421)
            origin = await http.post(url, json=init, headers={
                **headers, "Authorization": f"Bearer {SECRET}",
                "Origin": "https://evil.example"})  # fmt: skip
            assert origin.status_code == 403
    finally:
        proc.terminate()
        proc.wait(10)


async def test_writes_are_not_idempotent_and_big_arguments_are_too_large(
    stack: Stack, tmp_path: Path
) -> None:
    key = tmp_path / "agent.pem"
    session = bound_session(stack, key, "mcp-ida", "billing")
    async with over_stdio(server_env(stack, key, session), tmp_path / "mcp.log") as mcp:
        listed = {t.name: t for t in (await mcp.list_tools()).tools}
        create = listed["payments__create_invoice"].annotations
        assert create is not None and create.idempotent_hint is False
        rate = listed["payments__get_exchange_rate"].annotations
        assert rate is not None and rate.idempotent_hint is True
        big = await mcp.call_tool("payments__get_exchange_rate",
                                  {**RATE, "base": "E" * 1_200_000})  # fmt: skip
        assert error_code(big) == "payload_too_large", text(big)
        assert big.structured_content["error"]["retryable"] is False


async def test_a_new_process_of_the_same_user_finishes_an_approved_call(
    stack: Stack, tmp_path: Path
) -> None:
    """A one-shot stdio host: the call answers pending and the process ends; after the
    approval, a fresh process's handshake_wait runs it. Another user's process cannot."""
    key = tmp_path / "agent.pem"
    log = tmp_path / "mcp.log"
    params = {"to_account": "acct_4f9d2a", "amount": 640, "currency": "EUR"}
    tom = bound_session(stack, key, "mcp-oneshot", "treasury")
    async with over_stdio(server_env(stack, key, tom), log, "--approval-wait", "1") as mcp:
        pending = await mcp.call_tool("payments__send_payment", params)
    txn = pending.structured_content["transaction_id"]
    files = list((tmp_path / "pending").rglob("*.json"))
    assert len(files) == 1 and files[0].stat().st_mode & 0o077 == 0

    other = bound_session(stack, key, "mcp-someone-else", "treasury")
    async with over_stdio(server_env(stack, key, other), log) as mcp:
        stolen = await mcp.call_tool("handshake_wait", {"transaction_id": txn})
        assert error_code(stolen) == "invalid_transaction"

    await asyncio.to_thread(approve, stack, txn)
    tom_again = bound_session(stack, key, "mcp-oneshot", "treasury")
    async with over_stdio(server_env(stack, key, tom_again), log) as mcp:
        done = await mcp.call_tool("handshake_wait", {"transaction_id": txn})
    assert receipt_claims(done)["txn"] == txn
    assert not list((tmp_path / "pending").rglob("*.json"))


def _pending(txn: str, expires_in: float = 60) -> PendingCall:
    grant = Grant(transaction_id=txn, token="t" * 43, status="pending_approval",
                  tier="restricted", params_hash="sha256:" + "0" * 64,
                  expires_at=time.time() + expires_in)  # fmt: skip
    return PendingCall("payments.send_payment", {"amount": 1}, grant)


def test_pending_store_is_per_user_private_and_forgets_expired(tmp_path: Path) -> None:
    folder = tmp_path / "pending"
    PendingStore(folder).put("tom", _pending("txn-1"))
    (saved,) = folder.rglob("*.json")
    assert saved.stat().st_mode & 0o777 == 0o600 and saved.parent.stat().st_mode & 0o777 == 0o700
    fresh = PendingStore(folder)  # another process
    assert fresh.get("mallory", "txn-1") is None
    found = fresh.get("tom", "txn-1")
    assert found is not None and found.grant.token == "t" * 43
    fresh.drop("tom", "txn-1")
    assert not list(folder.rglob("*.json"))

    PendingStore(folder).put("tom", _pending("txn-old", expires_in=-1))
    assert PendingStore(folder).get("tom", "txn-old") is None
    assert not list(folder.rglob("*.json"))


def test_pending_store_never_writes_to_a_shared_folder(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    store = PendingStore(shared)
    store.put("tom", _pending("txn-2"))
    assert not list(shared.rglob("*.json"))
    assert store.get("tom", "txn-2") is not None  # still kept, in memory
