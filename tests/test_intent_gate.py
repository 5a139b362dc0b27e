"""The execute gate's interleavings, with the stream's de-duplication and the token's
record as plain objects: the intent published with the consume keeps "each token runs
at most once, exactly once when raced", even when Redis forgets a consume."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from mcp_handshake.services.execute import gate as gate_module
from mcp_handshake.services.execute.gate import Gate, intent_key, second_key
from mcp_handshake.services.runtime.pubacks import PubAck
from mcp_handshake.services.store import TxRecord
from mcp_handshake.shared.errors import InvalidTransaction, Unavailable

TH = "ab" * 32
FACTS = {"txn": "txn_1", "sub": "alice", "tool": "t", "tier": "public", "ph": "p"}


class Stream:
    """JetStream's de-duplication: the first publish of a key is stored, at a new sequence;
    a later one is acknowledged as a duplicate with the first one's sequence."""

    def __init__(self) -> None:
        self.seq = 0
        self.ids: dict[str, int] = {}

    async def intent_ack(self, key: str | None = None, **facts: Any) -> PubAck:
        event_id = f"{key}.execute.intent"
        if event_id in self.ids:
            return PubAck(stream="A", seq=self.ids[event_id], duplicate=True)
        self.seq += 1
        self.ids[event_id] = self.seq
        return PubAck(stream="A", seq=self.seq)

    async def intent(self, key: str | None = None, **facts: Any) -> None:
        if (await self.intent_ack(key, **facts)).duplicate:
            raise InvalidTransaction(transaction_id=facts.get("txn"))


class Record:
    """The token's record: consumed once (unless a failover forgets it), a release note."""

    def __init__(self) -> None:
        self.status = "granted"
        self.released: int | None = None
        self.notes: list[int] = []

    async def consume(self, delay: float = 0.0) -> TxRecord:
        await asyncio.sleep(delay)
        if self.status != "granted":
            raise InvalidTransaction(transaction_id="txn_1")
        self.status = "executed"
        return TxRecord(txn="txn_1", sub="alice", status="executed")

    async def release_intent(self, th: str, seq: int) -> None:
        self.released = seq
        self.notes.append(seq)

    async def intent_released(self, th: str) -> int | None:
        return self.released

    async def set_status(self, th: str, status: str) -> None:
        self.status = status

    def forget_consume(self) -> None:
        """A failover that lost the consume and everything after it."""
        self.status, self.released = "granted", None


class World:
    def __init__(self) -> None:
        self.stream, self.record = Stream(), Record()
        self.tasks: list[asyncio.Task[None]] = []

    def later(self, coro: Any) -> None:
        self.tasks.append(asyncio.get_running_loop().create_task(coro))

    def gate(self, *, early: bool = True, delay: float = 0.0) -> Gate:
        return Gate(self.stream, self.record, self.later,  # type: ignore[arg-type]
                    self.record.consume(delay), dict(FACTS), TH, early=early)  # fmt: skip

    async def attempt(self, **kw: Any) -> bool:
        """Whether the attempt passed the gate (and so would dispatch)."""
        try:
            await self.gate(**kw).passed()
        except (InvalidTransaction, Unavailable):
            return False
        return True

    async def settle(self) -> None:
        while self.tasks:
            await self.tasks.pop()


@pytest.fixture(autouse=True)
def short_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gate_module, "RELEASE_WAIT_S", 0.2)


async def test_the_key_goes_to_the_loser_and_the_winner_still_runs_once() -> None:
    w = World()
    # The loser's intent reaches the stream first; the winner's consume reaches Redis first.
    loser = w.gate(delay=0.01)
    winner = w.gate()
    ran = await asyncio.gather(winner.passed(), _refused(loser.passed()))
    await w.settle()
    assert isinstance(ran[0], TxRecord) and ran[1] is True
    # The loser noted its intent (the key's holder, sequence 1); the winner took the
    # second key derived from that sequence.
    assert w.record.notes == [1]
    assert f"{second_key(TH, 1)}.execute.intent" in w.stream.ids


async def test_raced_copies_run_exactly_once_in_any_order() -> None:
    for delays in ([0, 0.002, 0.004, 0.006], [0.006, 0.004, 0.002, 0], [0.003, 0, 0.003, 0]):
        w = World()
        ran = await asyncio.gather(*(w.attempt(delay=d) for d in delays))
        await w.settle()
        assert sum(ran) == 1, (delays, ran)


async def test_a_replay_after_a_lost_consume_is_refused() -> None:
    w = World()
    assert await w.attempt()  # took the key and ran: it never releases it
    w.record.forget_consume()
    assert not await w.attempt()  # consumed again, but the key's holder ran
    await w.settle()
    assert w.record.status == "failed" and w.record.notes == []


async def test_a_replay_after_a_lost_consume_of_a_raced_token_is_refused() -> None:
    """The first run was the winner of a race (second key); Redis forgets its consume
    but keeps the loser's note (written before): the second key is taken."""
    w = World()
    first = await asyncio.gather(w.attempt(delay=0.01), w.attempt())
    await w.settle()
    assert list(first) == [False, True] and f"{second_key(TH, 1)}.execute.intent" in w.stream.ids
    note = w.record.released
    w.record.forget_consume()
    w.record.released = note  # the note survived the failover
    assert not await w.attempt()


async def test_after_consume_refuses_a_taken_key_at_once() -> None:
    w = World()
    await w.stream.intent_ack(key=intent_key(TH))
    w.record.released = 1  # even with a note: only the concurrent mode reads it
    assert not await w.attempt(early=False)


async def test_an_attempt_whose_consume_failed_releases_the_key() -> None:
    """The store failed under the first attempt (its outcome unknown to it): it never
    dispatches, so it releases the key it took, and the retry runs."""
    w = World()

    async def failing() -> TxRecord:
        raise Unavailable("token store unavailable; nothing was executed")

    g = Gate(w.stream, w.record, w.later, failing(), dict(FACTS), TH,  # type: ignore[arg-type]
             early=True)  # fmt: skip
    with pytest.raises(Unavailable):
        await g.passed()
    await w.settle()
    assert w.record.released == 1
    assert await w.attempt()


async def test_a_failed_intent_refuses_and_releases_nothing() -> None:
    w = World()

    async def unavailable(key: str | None = None, **facts: Any) -> PubAck:
        raise Unavailable("audit trail unavailable; nothing was executed")

    w.stream.intent_ack = unavailable  # type: ignore[method-assign]
    assert not await w.attempt()
    await w.settle()
    assert w.record.status == "failed" and w.record.released is None


async def _refused(passed: Any) -> bool:
    try:
        await passed
    except InvalidTransaction:
        return True
    return False
