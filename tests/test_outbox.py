"""Non-gating audit events are never dropped: the bounded outbox retries them, and a
full outbox makes the worker refuse work (``unavailable``) until it drains."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest
from nats.js.api import ConsumerConfig, DeliverPolicy

from mcp_handshake.services.dev.devstack import Stack, StackSpec
from mcp_handshake.services.runtime.audit import STREAM, ensure_audit_stream
from mcp_handshake.services.runtime.audit_group import expand
from mcp_handshake.services.runtime.outbox import Outbox
from tests.conftest import connected

LIST = {"status": "open"}


class FlakyPublisher:
    """Fails while ``down``; records every item it accepted."""

    def __init__(self) -> None:
        self.down = False
        self.accepted: list[int] = []
        self.attempts = 0

    async def __call__(self, item: int) -> None:
        self.attempts += 1
        await asyncio.sleep(0)
        if self.down:
            raise TimeoutError
        self.accepted.append(item)


async def _until(check: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


async def test_every_item_is_sent_once() -> None:
    pub = FlakyPublisher()
    box: Outbox[int] = Outbox(pub, limit=1000, concurrency=8)
    for i in range(500):
        box.put(i)
    await _until(lambda: len(box) == 0)
    assert sorted(pub.accepted) == list(range(500))
    assert box.sent == 500 and box.dropped == 0


async def test_failed_sends_are_retried_until_they_land() -> None:
    pub = FlakyPublisher()
    pub.down = True
    box: Outbox[int] = Outbox(pub, limit=1000, backoff_min=0.01, backoff_max=0.05)
    for i in range(100):
        box.put(i)
    await _until(lambda: box.retried >= 5)
    assert pub.accepted == [] and len(box) == 100 and box.failing
    # While failing, one probe at a time: no burst of doomed publishes.
    attempts = pub.attempts
    await asyncio.sleep(0.2)
    assert pub.attempts - attempts < 30
    pub.down = False
    await _until(lambda: len(box) == 0)
    assert sorted(pub.accepted) == list(range(100))
    assert not box.failing


async def test_full_and_hard_limit() -> None:
    pub = FlakyPublisher()
    pub.down = True
    box: Outbox[int] = Outbox(pub, limit=3, hard_limit=5, backoff_min=0.01, backoff_max=0.02)
    assert [box.put(i) for i in range(3)] == [True] * 3
    assert box.full
    assert [box.put(i) for i in range(3, 6)] == [True, True, False]
    assert box.dropped == 1
    pub.down = False
    await _until(lambda: not box.full and len(box) == 0)
    assert sorted(pub.accepted) == [0, 1, 2, 3, 4]


async def test_drain_reports_what_is_left() -> None:
    pub = FlakyPublisher()
    pub.down = True
    box: Outbox[int] = Outbox(pub, limit=10, backoff_min=0.01, backoff_max=0.02)
    box.put(1)
    box.put(2)
    assert await box.drain(timeout=0.1) == 2
    pub.down = False
    box.put(3)
    assert await box.drain(timeout=2.0) == 0
    assert sorted(pub.accepted) == [1, 2, 3]


async def _events(raw: Any) -> list[dict[str, Any]]:
    """Every event in the audit stream (read as the operator)."""
    js = raw.nc.jetstream()
    info = await js.stream_info(STREAM)
    if info.state.messages == 0:
        return []
    sub = await js.subscribe(
        "handshake.audit.>", stream=STREAM, ordered_consumer=True,
        config=ConsumerConfig(deliver_policy=DeliverPolicy.ALL),
    )  # fmt: skip
    out = []
    try:
        for _ in range(info.state.messages):
            msg = await sub.next_msg(timeout=5)
            out += expand(msg.subject, msg.data)  # a group message: each of its events
    finally:
        await sub.unsubscribe()
    return out


@pytest.fixture
def small_outbox(stack_factory: Callable[..., Stack]) -> Stack:
    """A stack whose workers keep at most one unrecorded audit event."""
    spec = StackSpec(authorize=1, execute=0, executor=0, approval=0, audit=1)
    return stack_factory(spec, HANDSHAKE_AUDIT_OUTBOX="1")


@pytest.mark.fault
async def test_full_outbox_refuses_work_and_loses_nothing(small_outbox: Stack) -> None:
    st = small_outbox
    async with connected(st) as raw, connected(st, "operator") as operator:
        alice = raw.session("alice", "billing")
        # The stream goes away: events can no longer be recorded.
        st.stop_proc("audit-0")  # the writer would stop on the missing stream anyway
        await operator.nc.jetstream().delete_stream(STREAM)
        first = await raw.authorize(alice, "payments.list_invoices", LIST)
        assert first.error is None, first.body
        txn = first.body["transaction_id"]
        # Its authorize.granted waits in the outbox, which is now full: no more grants.
        refused = await raw.authorize(alice, "payments.list_invoices", LIST)
        assert refused.error == "unavailable", refused.body
        assert refused.body["error"]["retryable"] is True
        # The stream is back: the outbox drains and the worker grants again.
        await ensure_audit_stream(operator.nc.jetstream(), 86400)
        deadline = time.monotonic() + 20
        while True:
            again = await raw.authorize(alice, "payments.list_invoices", LIST)
            if again.error is None:
                break
            assert again.error == "unavailable" and time.monotonic() < deadline
            await asyncio.sleep(0.2)
        events = await _events(operator)
        granted = [e for e in events if e["kind"] == "authorize.granted"]
        assert txn in {e.get("txn") for e in granted}
        # The refusal is on record too.
        assert any(e["kind"] == "authorize.denied" and e["outcome"] == "unavailable"
                   for e in events)  # fmt: skip
