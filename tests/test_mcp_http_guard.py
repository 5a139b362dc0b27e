"""The local ``mcp --transport http`` server, attacked as the gateway's ``/mcp`` was.

A malformed body with a secret-looking argument is refused without quoting it (the
MCP SDK's own refusal echoes the body); a body trickled in is cut off at the body
deadline; a connection that never finishes its headers is closed.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from mcp_handshake.services.dev.devstack import Stack
from mcp_handshake.services.dev.procs import free_port, wait_port
from tests.test_gateway_mcp import INIT
from tests.test_mcp_server import SECRET, start_http_server
from tests.test_redteam_http import _trickle

ARGUMENT = "acct-local-7d2b-not-for-echo"
HEADERS = {"Accept": "application/json, text/event-stream", "Authorization": f"Bearer {SECRET}"}
#: The server's body deadline (10 s) and room for a loaded machine.
BODY_DEADLINE_S = 10.0 + 4.0
#: The server's header deadline (5 s) and room for a loaded machine.
HEADER_DEADLINE_S = 5.0 + 4.0


@pytest.fixture
async def local_port(stack: Stack, tmp_path: Path) -> AsyncIterator[int]:
    port = free_port()
    proc = start_http_server(stack, tmp_path / "agent.pem", tmp_path / "mcp.log", port)
    try:
        await asyncio.to_thread(wait_port, port, "mcp server")
        yield port
    finally:
        proc.terminate()
        proc.wait(10)
    assert ARGUMENT not in (tmp_path / "mcp.log").read_text()


async def test_a_malformed_body_is_not_quoted_back(local_port: int) -> None:
    args = {"quote": "USD", "base": ARGUMENT}  # last: what a truncated quote keeps
    call = {"jsonrpc": "2.0", "id": 2, "method": "tools/call",
            "params": {"name": "payments__get_exchange_rate", "arguments": args}}  # fmt: skip
    listing = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}
    url = f"http://127.0.0.1:{local_port}/mcp"
    async with httpx.AsyncClient() as http:
        for body in ([listing, call], {**call, "jsonrpc": "1.0"}, {**call, "method": 7}):
            refused = await http.post(url, json=body, headers=HEADERS)
            assert refused.status_code == 400, refused.text
            assert refused.json()["error"]["code"] < 0
            # pydantic quotes a value's head and tail: neither may come back
            assert ARGUMENT[:12] not in refused.text and ARGUMENT[-12:] not in refused.text
        broken = await http.post(url, content=b'{"jsonrpc": "2.0", "base": "' + ARGUMENT.encode(),
                                 headers=HEADERS)  # fmt: skip
        assert broken.status_code == 400 and ARGUMENT[:12] not in broken.text
        ok = await http.post(url, json=INIT, headers=HEADERS)
        assert ok.status_code == 200, ok.text


async def test_a_trickled_body_is_cut_off(local_port: int) -> None:
    body = b'{"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}' * 2
    head = (f"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1:{local_port}\r\n"
            f"Authorization: Bearer {SECRET}\r\nContent-Type: application/json\r\n"
            "Accept: application/json, text/event-stream\r\n")  # fmt: skip
    got, after = await asyncio.to_thread(_trickle, local_port, head, body, BODY_DEADLINE_S + 6)
    assert got.startswith("HTTP/1.1 408 "), got
    assert after < BODY_DEADLINE_S and SECRET not in got


def _held_open(port: int, give_up_s: float) -> float:
    """Seconds until the server closes a connection whose headers never end."""
    with socket.create_connection(("127.0.0.1", port), timeout=give_up_s) as s:
        start = time.monotonic()
        s.sendall(b"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        try:
            while s.recv(100):
                pass
        except TimeoutError:
            return float("inf")
        return time.monotonic() - start


async def test_unfinished_headers_are_cut_off(local_port: int) -> None:
    assert await asyncio.to_thread(_held_open, local_port, HEADER_DEADLINE_S) < HEADER_DEADLINE_S
