"""A worker's health port: /healthz, /readyz (503 with a reason when Redis is gone),
/metrics in the Prometheus text format."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from mcp_handshake.services.dev.devstack import Stack, StackSpec, free_port
from tests.conftest import connected

LIST = {"status": "open"}


async def _get(url: str) -> tuple[int, Any, str]:
    async with aiohttp.ClientSession() as client, client.get(url) as resp:
        text = await resp.text()
        body = await resp.json(content_type=None) if "json" in resp.content_type else None
        return resp.status, body, text


async def _wait_status(url: str, status: int, timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            got, body, _ = await _get(url)
            if got == status:
                return body
        except aiohttp.ClientError:
            pass
        assert time.monotonic() < deadline, f"{url} never answered {status}"
        await asyncio.sleep(0.1)


@pytest.fixture
def bare_stack(stack_factory: Callable[..., Stack]) -> Stack:
    """Servers and the audit worker only; the test starts the worker it probes."""
    return stack_factory(StackSpec(authorize=0, execute=0, executor=0, approval=0, audit=1))


@pytest.mark.fault
async def test_health_ready_and_metrics(bare_stack: Stack) -> None:
    st = bare_stack
    port = free_port()
    st.start_worker("authorize", 0, "--health-port", str(port))
    base = f"http://127.0.0.1:{port}"
    assert await _wait_status(f"{base}/readyz", 200) == {"ready": True}
    assert (await _get(f"{base}/healthz"))[:2] == (200, {"alive": True})

    async with connected(st) as raw:
        alice = raw.session("alice", "billing")
        assert (await raw.authorize(alice, "payments.list_invoices", LIST)).error is None
        assert (await raw.authorize(alice, "no.such.tool", {})).error == "unknown_tool"

    status, _, text = await _get(f"{base}/metrics")
    assert status == 200
    families = {f.name: f for f in text_string_to_metric_families(text)}
    requests = {(s.labels["endpoint"], s.labels["outcome"]): s.value
                for s in families["handshake_requests"].samples}  # fmt: skip
    assert requests[("authorize", "ok")] == 1
    assert requests[("authorize", "unknown_tool")] == 1
    assert families["handshake_nats_connected"].samples[0].value == 1
    assert families["handshake_audit_outbox_events"].samples[0].labels == {"worker": "authorize"}

    # Redis goes away: alive, but not ready, and it says why.
    st.stop_proc("redis-server")
    body = await _wait_status(f"{base}/readyz", 503)
    assert body["ready"] is False and body["reason"].startswith("redis"), body
    assert (await _get(f"{base}/healthz"))[0] == 200


def test_health_port_in_use_exits_with_one_line(bare_stack: Stack) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        proc = bare_stack.start_worker("executor", 0, "--health-port", str(port))
        assert proc.popen.wait(30) == 1
    lines = [x for x in (bare_stack.logs / "executor-0.log").read_text().splitlines() if x.strip()]
    assert lines == [f"failed: health port 127.0.0.1:{port}: Address already in use"], lines
