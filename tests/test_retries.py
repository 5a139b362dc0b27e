"""Target-call retries: backoff with jitter, Retry-After honoured (bounded), and 429/503
retried only for operations safe to repeat. A tiny aiohttp server plays the target."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from email.utils import formatdate
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from mcp_handshake.services.core.config import TargetConfig
from mcp_handshake.services.core.tools import HttpOperation
from mcp_handshake.services.executor.responses import retry_after as _retry_after
from mcp_handshake.services.executor.targets import TargetClient
from mcp_handshake.shared.errors import OutcomeUnknown, TargetError

pytestmark = pytest.mark.timeout(30)


class Flaky:
    """Answers each path's scripted statuses in turn (then 200), recording every call."""

    def __init__(self) -> None:
        self.script: list[tuple[int, dict[str, str]]] = []
        self.calls: list[tuple[str, str | None, float]] = []

    async def handle(self, request: web.Request) -> web.Response:
        self.calls.append(
            (request.method, request.headers.get("Idempotency-Key"), time.monotonic())
        )
        if self.script:
            status, headers = self.script.pop(0)
            return web.json_response({"error": {"code": "busy"}}, status=status, headers=headers)
        return web.json_response({"ok": True, "n": len(self.calls)})


@pytest.fixture
async def target() -> AsyncIterator[tuple[Flaky, str]]:
    flaky = Flaky()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", flaky.handle)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield flaky, str(server.make_url("")).rstrip("/")
    finally:
        await server.close()


def _client(url: str, **cfg: Any) -> TargetClient:
    return TargetClient("t", TargetConfig(base_url=url, **cfg), Path("."))


GET = HttpOperation("GET", "/v1/things")
POST = HttpOperation("POST", "/v1/things", body=("x",))
POST_KEYED = HttpOperation("POST", "/v1/things", body=("x",), idempotency_key=True)


async def test_retry_after_is_honoured_for_idempotent_calls(target: tuple[Flaky, str]) -> None:
    flaky, url = target
    flaky.script = [(503, {"Retry-After": "1"})]
    client = _client(url, retries=2)
    try:
        assert (await client.call(GET, {}, "txn-1"))["ok"] is True
    finally:
        await client.aclose()
    assert len(flaky.calls) == 2
    assert flaky.calls[1][2] - flaky.calls[0][2] >= 0.95


async def test_429_retried_only_when_safe_to_repeat(target: tuple[Flaky, str]) -> None:
    flaky, url = target
    client = _client(url, retries=2)
    try:
        flaky.script = [(429, {"Retry-After": "0"})]
        with pytest.raises(TargetError, match="HTTP 429"):
            await client.call(POST, {"x": 1}, "txn-2")  # a plain POST: never twice
        assert len(flaky.calls) == 1
        flaky.script = [(429, {"Retry-After": "0"}), (503, {})]
        assert (await client.call(POST_KEYED, {"x": 1}, "txn-3"))["ok"] is True
    finally:
        await client.aclose()
    # the keyed POST went three times, always under the transaction id
    assert [c[:2] for c in flaky.calls[1:]] == [("POST", "txn-3")] * 3


async def test_long_retry_after_ends_the_retries(target: tuple[Flaky, str]) -> None:
    flaky, url = target
    flaky.script = [(503, {"Retry-After": "120"})]
    client = _client(url, retries=3, retry_after_max_s=2.0)
    try:
        t0 = time.monotonic()
        with pytest.raises(TargetError, match="HTTP 503"):
            await client.call(GET, {}, "txn-4")
        assert time.monotonic() - t0 < 1.0
    finally:
        await client.aclose()
    assert len(flaky.calls) == 1


async def test_backoff_is_exponential_with_jitter_and_bounded(target: tuple[Flaky, str]) -> None:
    flaky, url = target
    flaky.script = [(500, {}), (502, {}), (504, {})]
    client = _client(url, retries=3, backoff_s=0.05, backoff_max_s=0.2)
    try:
        assert (await client.call(GET, {}, "txn-5"))["n"] == 4
    finally:
        await client.aclose()
    gaps = [b[2] - a[2] for a, b in zip(flaky.calls, flaky.calls[1:], strict=False)]
    assert all(g < 0.5 for g in gaps)
    flaky.calls.clear()
    flaky.script = [(500, {})] * 5
    client = _client(url, retries=2, backoff_s=0.01)
    try:
        with pytest.raises(TargetError):
            await client.call(GET, {}, "txn-6")
    finally:
        await client.aclose()
    assert len(flaky.calls) == 3  # 1 + retries, then the target's refusal


async def test_timeouts_of_unsafe_calls_are_not_retried(target: tuple[Flaky, str]) -> None:
    flaky, _ = target
    slow = web.Application()

    async def hang(request: web.Request) -> web.Response:
        flaky.calls.append((request.method, request.headers.get("Idempotency-Key"), 0.0))
        await asyncio.sleep(5)
        return web.json_response({})

    slow.router.add_route("*", "/{tail:.*}", hang)
    server = TestServer(slow, host="127.0.0.1")
    await server.start_server()
    client = _client(str(server.make_url("")).rstrip("/"), retries=2, timeout_s=0.3)
    try:
        with pytest.raises(OutcomeUnknown):
            await client.call(POST, {"x": 1}, "txn-7")
        assert len(flaky.calls) == 1
        with pytest.raises(OutcomeUnknown):
            await client.call(POST_KEYED, {"x": 1}, "txn-8")
        assert len(flaky.calls) == 4
    finally:
        await client.aclose()
        await server.close()


def test_retry_after_forms() -> None:
    assert _retry_after("3") == 3.0
    assert _retry_after(None) is None and _retry_after("soon") is None
    later = _retry_after(formatdate(time.time() + 30, usegmt=True))
    assert later is not None and 25 < later <= 31
    assert _retry_after(formatdate(time.time() - 30, usegmt=True)) == 0.0
