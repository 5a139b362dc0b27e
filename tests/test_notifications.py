"""Approval webhooks: requested, decided and expired, each signed, retried with backoff."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from mcp_handshake.services.dev.devstack import Stack, StackSpec
from mcp_handshake.services.dev.procs import free_port
from tests.conftest import _test_config, connected, make_stack

SECRET = "whsec-test-0123456789-0123456789-0123456789"


class Receiver:
    """A local webhook receiver that checks every signature and fails each first try."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.attempts: dict[str, int] = {}
        self.bad_signatures = 0

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        ts = request.headers["Handshake-Timestamp"]
        expected = "v1=" + hmac.new(SECRET.encode(), ts.encode() + b"." + body,
                                    hashlib.sha256).hexdigest()  # fmt: skip
        if not hmac.compare_digest(expected, request.headers["Handshake-Signature"]):
            self.bad_signatures += 1
            return web.Response(status=401)
        if abs(time.time() - int(ts)) > 300:
            return web.Response(status=401)
        event = json.loads(body)
        key = f"{event['transaction_id']}:{event['event']}"
        self.attempts[key] = self.attempts.get(key, 0) + 1
        if self.attempts[key] == 1:
            return web.Response(status=503)  # the sender must retry
        self.events.append(event)
        return web.Response(status=204)

    def of(self, txn: str) -> list[str]:
        return [e["event"] for e in self.events if e["transaction_id"] == txn]


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[Receiver, str]]:
    rec = Receiver()
    app = web.Application()
    app.router.add_post("/hook", rec.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield rec, f"http://127.0.0.1:{port}/hook"
    finally:
        await runner.cleanup()


async def _until(check: Callable[[], bool], timeout: float) -> None:
    for _ in range(int(timeout / 0.2)):
        if check():
            return
        await asyncio.sleep(0.2)


def _with_webhook(home: Path, url: str) -> Stack:
    stack = make_stack(home, StackSpec(authorize=1, execute=1, executor=1, approval=1))
    secret = home / "webhook.secret"
    secret.write_text(SECRET)
    secret.chmod(0o600)
    section = f'\n[approval.webhook]\nurl = "{url}"\nsecret_file = "{secret}"\nretries = 3\n'

    def edit(text: str) -> str:
        return _test_config(text).replace("\n[approval]\n", "\n") + section

    stack.config_edit = edit
    return stack


async def test_webhooks_for_requested_decided_and_expired(
    tmp_path: Path, receiver: tuple[Receiver, str]
) -> None:
    rec, url = receiver
    stack = _with_webhook(tmp_path / "home", url)
    await stack.start()
    try:
        async with connected(stack) as raw:
            tess = raw.session("tess-hook", "treasury")
            victor = raw.session("victor-hook", "approver")
            params = {"to_account": "acct_unknown7", "amount": 2500, "currency": "EUR"}
            g = (await raw.authorize(tess, "payments.send_payment", params)).body
            txn = g["transaction_id"]
            short = (await raw.authorize(tess, "test.short_approval", {"text": "x"})).body
            await _until(lambda: "approval.requested" in rec.of(txn), 10)
            assert rec.of(txn) == ["approval.requested"]
            assert (await raw.decide(victor, txn, "approve")).error is None
            await _until(
                lambda: (
                    "approval.decided" in rec.of(txn)
                    and "approval.expired" in rec.of(short["transaction_id"])
                ),
                20,
            )
    finally:
        stack.stop()
    assert rec.of(txn) == ["approval.requested", "approval.decided"]
    decided = next(e for e in rec.events if e["event"] == "approval.decided")
    assert decided["status"] == "approved" and decided["decided_by"] == "victor-hook"
    assert decided["requester"] == "tess-hook" and decided["tool"] == "payments.send_payment"
    assert rec.of(short["transaction_id"])[-1] == "approval.expired"
    assert all(n >= 2 for n in rec.attempts.values())  # each first attempt failed, then retried
    assert rec.bad_signatures == 0
    assert all("token" not in json.dumps(e) for e in rec.events)
