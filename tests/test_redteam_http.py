"""Attacks on the gateway's HTTP faces that no other module covers, against the real stack.

- A body trickled to ``/mcp`` by a host with a valid session: the connection is answered
  ``408`` and closed once the gateway's body deadline passes, as on ``/v1/*``, instead
  of being held open for as long as the sender likes (a slowloris past the headers).
"""

from __future__ import annotations

import asyncio
import socket
import time

from mcp_handshake.services.dev.devstack import Stack
from tests.support.http_agent import gateway_url
from tests.test_gateway_mcp import session_for

__all__ = ["gateway_url"]

#: The gateway's default body deadline (``GatewayOptions.body_timeout_s``), plus margin.
BODY_DEADLINE_S = 10.0 + 4.0


def _trickle(port: int, head: str, body: bytes, give_up_s: float) -> tuple[str, float]:
    """Send ``head``, then ``body`` one byte a second until the gateway closes the
    connection; what came back, and when its first byte did."""
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(head.encode() + f"Content-Length: {len(body)}\r\n\r\n".encode())
        s.settimeout(1)
        start, got, answered = time.monotonic(), b"", float("inf")
        for i in range(len(body)):
            if time.monotonic() - start > give_up_s:
                return f"still open; got {got[:40]!r}", answered
            try:
                s.sendall(body[i : i + 1])
                data = s.recv(200)
            except TimeoutError:
                continue
            except OSError:
                break
            if not data:
                break
            answered, got = min(answered, time.monotonic() - start), got + data
        return got.decode(errors="replace"), answered


async def test_a_trickled_mcp_body_is_cut_off(stack: Stack, gateway_url: str) -> None:
    port = int(gateway_url.rsplit(":", 1)[1])
    token = session_for(stack, "rt-slow", "billing")
    body = b'{"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}' * 2
    head = (f"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"Authorization: Bearer {token}\r\nContent-Type: application/json\r\n"
            "Accept: application/json, text/event-stream\r\n")  # fmt: skip
    got, after = await asyncio.to_thread(_trickle, port, head, body, BODY_DEADLINE_S + 6)
    assert got.startswith("HTTP/1.1 408 "), got
    assert after < BODY_DEADLINE_S and token not in got
