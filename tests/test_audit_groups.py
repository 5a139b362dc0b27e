"""Audit events emitted together travel as one JetStream message (the group envelope),
and the writer still writes each as its own hash-chained line.

Each event keeps its own line (nothing merged or dropped); a group whose ack is lost
is retried whole under the same ``Nats-Msg-Id`` and stored once; a group too large
is split; a writer cut short in the middle of a group goes on from the next event;
a tampered group line fails ``audit verify``.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import time
import uuid
from pathlib import Path
from typing import Any

import msgspec
import nats
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from nats.js.api import ConsumerConfig, DeliverPolicy

from mcp_handshake.client import CallResult
from mcp_handshake.services.audit.chain import hashed_line, read_entries, side_file
from mcp_handshake.services.audit.log import AuditLogWriter
from mcp_handshake.services.audit.verify import verify_log
from mcp_handshake.services.dev.devstack import Stack
from mcp_handshake.services.runtime.audit import STREAM, Audit, AuditEvent, ensure_audit_stream
from mcp_handshake.services.runtime.audit_group import AuditGroup, expand, split
from mcp_handshake.services.runtime.outbox import Outbox
from mcp_handshake.services.runtime.pubacks import PubAck
from mcp_handshake.shared.keys import public_jwk
from tests.conftest import connected
from tests.test_audit import events, log_path
from tests.test_client import agent
from tests.test_perf_levers import js_url

__all__ = ["js_url"]  # the fixture, used here

_encode = msgspec.json.encode
STREAM_ID = {"stream": STREAM, "created": "2026-01-01T00:00:00+00:00", "first_seq": 1}


def _event(kind: str = "execute.succeeded", txn: str | None = None) -> AuditEvent:
    txn = txn or "t-" + uuid.uuid4().hex
    return AuditEvent(kind=kind, id=f"{txn}.{kind}", at=time.time(), worker="execute@h:1",
                      outcome="ok", txn=txn, sub="alice", tool="payments.rate")  # fmt: skip


async def _messages(nc: nats.NATS) -> list[Any]:
    """Every message of the audit stream, in order."""
    js = nc.jetstream()
    n = (await js.stream_info(STREAM)).state.messages
    sub = await js.subscribe("handshake.audit.>", stream=STREAM, ordered_consumer=True,
                             config=ConsumerConfig(deliver_policy=DeliverPolicy.ALL))  # fmt: skip
    try:
        return [await sub.next_msg(timeout=5) for _ in range(n)]
    finally:
        await sub.unsubscribe()


# -- without servers ------------------------------------------------------------------


async def test_outbox_counts_a_group_as_its_events_and_retries_it_whole() -> None:
    sends: list[list[int]] = []
    fail = [True]

    async def send(item: list[int]) -> None:
        sends.append(item)
        if fail and fail.pop():
            raise TimeoutError  # the ack lost: the whole group again

    box: Outbox[list[int]] = Outbox(send, limit=4, hard_limit=6, backoff_min=0.01,
                                    backoff_max=0.02, weight=len)  # fmt: skip
    assert box.put([1, 2, 3]) and len(box) == 3
    assert box.put([4, 5]) and box.full
    assert not box.put([6, 7]) and box.dropped == 2  # would pass the hard limit: whole
    assert await box.drain(5.0) == 0
    assert sorted(sends) == [[1, 2, 3], [1, 2, 3], [4, 5]]
    assert box.sent == 5 and box.retried == 3


async def test_outbox_group_cut_short_at_shutdown_is_counted_once() -> None:
    started = asyncio.Event()

    async def send(item: list[int]) -> None:
        started.set()
        await asyncio.sleep(10)  # never acked before the drain gives up

    box: Outbox[list[int]] = Outbox(send, limit=100, weight=len)
    box.put([1, 2, 3])
    await started.wait()
    assert await box.drain(0.05) == 3
    assert len(box) == 3 and box.sent == 0  # back in the queue, not counted twice


def test_split_keeps_every_event_in_order_under_the_size() -> None:
    group = [_event() for _ in range(40)]
    encoded = [_encode(e) for e in group]
    parts = split(group, encoded, 2000)
    assert len(parts) > 1
    again: list[Any] = []
    for part in parts:
        if isinstance(part, AuditGroup):
            assert len(part.data) <= 2000
            again += expand("handshake.audit.execute.group", part.data)
        else:  # a part of one event goes alone, as before
            again.append(msgspec.to_builtins(part))
    assert again == [json.loads(e) for e in encoded]
    whole = split(group, encoded, 1 << 20)
    assert len(whole) == 1 and isinstance(whole[0], AuditGroup)
    same = AuditGroup(group, encoded)
    assert same.msg_id == whole[0].msg_id and same.msg_id.startswith("group.")
    assert AuditGroup(group[::-1], encoded[::-1]).msg_id != same.msg_id


def _writer(path: Path, key: Ed25519PrivateKey) -> AuditLogWriter:
    w = AuditLogWriter(path, key, checkpoint_every=1000)
    assert w.try_lock()
    w.open()
    return w


def test_group_lines_resume_after_a_crash_and_verify(tmp_path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    jwks = {"keys": [public_jwk(key)]}
    w = _writer(tmp_path / "a" / "audit.log", key)
    w.begin(STREAM_ID)
    a, b, c = ({"kind": k} for k in ("a", "b", "c"))
    assert w.append(1, {"kind": "alone"})
    assert w.append_group(2, [a, b, c])
    w._fh.flush()
    whole, side = w.path.read_bytes(), side_file(w.path).read_bytes()
    w.close()
    # A crash after two of the group's three lines reached the disk.
    cut = tmp_path / "b" / "audit.log"
    cut.parent.mkdir()
    cut.write_bytes(whole[: whole.rstrip(b"\n").rfind(b"\n") + 1])
    side_file(cut).write_bytes(side)
    w2 = _writer(cut, key)
    assert w2.last_stream_seq == 1
    assert not w2.append(2, {"kind": "other"}), "the group must be finished first"
    assert w2.append_group(2, [a, b, c]) and w2.append(3, {"kind": "d"})
    w2.close()
    lines = [e["body"] for e in read_entries(cut) if e["kind"] == "event"]
    assert [(x["sseq"], x.get("part"), x["event"]["kind"]) for x in lines] == [
        (1, None, "alone"), (2, [0, 3], "a"), (2, [1, 3], "b"), (2, [2, 3], "c"), (3, None, "d")
    ]  # fmt: skip
    result = verify_log(cut, jwks)
    assert result.ok and result.entries == 5, result


def test_a_group_line_tampered_or_out_of_place_fails_verify(tmp_path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    jwks = {"keys": [public_jwk(key)]}
    w = _writer(tmp_path / "audit.log", key)
    w.begin(STREAM_ID)
    assert w.append_group(1, [{"kind": "a"}, {"kind": "b"}])
    w.close()
    text = w.path.read_text()
    w.path.write_text(text.replace('"kind":"b"', '"kind":"x"'))
    bad = verify_log(w.path, jwks)
    assert not bad.ok and "hash" in bad.reason
    # Lines re-chained by someone holding nothing but the file: the order is still checked.
    for parts in ([[0, 2], [0, 2]], [[1, 2], [0, 2]], [[0, 2], [1, 3]]):
        w3 = _writer(tmp_path / str(parts) / "audit.log", key)
        w3.begin(STREAM_ID)
        for part in parts:
            body = {"sseq": 1, "part": part, "event": {}}
            line, h = hashed_line(w3._tail.seq + 1, w3._tail.h, "event", body)
            w3._fh.write(line)
            w3._tail.seq, w3._tail.h = w3._tail.seq + 1, h
        w3.close()
        result = verify_log(w3.path, jwks)
        assert not result.ok and "out of order" in result.reason, (parts, result)


# -- against a JetStream server ------------------------------------------------------


async def test_a_group_is_one_message_and_a_retried_group_is_stored_once(js_url: str) -> None:
    nc = await nats.connect(js_url)
    await ensure_audit_stream(nc.jetstream(), 900)
    audit = Audit(nc, "execute")
    assert audit.max_group_bytes <= nc.max_payload // 2
    with audit.grouped():
        with audit.grouped():  # nested: the outer one sends
            audit.emit(audit.event("execute.succeeded", "ok", txn="t-1"))
        for i in range(4):
            audit.emit(audit.event("receipt.issued", "ok", txn=f"t-{i}"))
        assert len(audit.outbox) == 0  # held until the group ends
    assert await audit.outbox.drain(5.0) == 0 and audit.published == 5
    [msg] = await _messages(nc)
    assert msg.subject == "handshake.audit.execute.group"
    assert [e["kind"] for e in expand(msg.subject, msg.data)] == ["execute.succeeded"] + [
        "receipt.issued"
    ] * 4
    # The ack of the next group is lost after the stream stored it: retried whole, stored once.
    publish = audit._acks.publish
    lost: list[PubAck] = []

    async def ack_lost(subject: str, data: bytes, **kw: Any) -> PubAck:
        ack = await publish(subject, data, **kw)
        if not lost:
            lost.append(ack)
            raise TimeoutError
        assert ack.duplicate and ack.seq == lost[0].seq  # the same Nats-Msg-Id
        return ack

    audit._acks.publish = ack_lost  # type: ignore[method-assign]
    with audit.grouped():
        for i in range(3):
            audit.emit(audit.event("execute.succeeded", "ok", txn=f"u-{i}"))
    assert await audit.outbox.drain(5.0) == 0
    assert audit.outbox.retried == 3 and audit.published == 8
    audit._acks.publish = publish  # type: ignore[method-assign]
    audit.emit(audit.event("execute.succeeded", "ok", txn="alone"))  # alone: as before
    assert await audit.outbox.drain(5.0) == 0
    msgs = await _messages(nc)
    assert len(msgs) == 3 and msgs[-1].subject == "handshake.audit.execute.execute.succeeded"
    assert sum(len(expand(m.subject, m.data)) for m in msgs) == 9
    await nc.close()


async def test_an_oversized_group_is_split_under_the_limit(js_url: str) -> None:
    nc = await nats.connect(js_url)
    await ensure_audit_stream(nc.jetstream(), 900)
    audit = Audit(nc, "authorize")
    audit.max_group_bytes = 2048
    with audit.grouped():
        for i in range(50):
            audit.emit(audit.event("authorize.granted", "ok", txn=f"t-{i:03}", sub="alice"))
    assert await audit.outbox.drain(5.0) == 0
    msgs = await _messages(nc)
    assert len(msgs) > 2 and all(len(m.data) <= 2048 for m in msgs)
    got = [e["txn"] for m in msgs for e in expand(m.subject, m.data)]
    assert got == [f"t-{i:03}" for i in range(50)]
    await nc.close()


# -- the whole stack -------------------------------------------------------------------


async def _stream_of(stack: Stack, sub: str, n: int) -> set[str]:
    rates = [("payments.get_exchange_rate", {"base": "EUR", "quote": q})
             for q in ("USD", "GBP", "JPY", "CHF") * (n // 4)]  # fmt: skip
    async with agent(stack, sub, "billing") as hs:
        done = {i: o async for i, o in hs.stream(iter(rates), concurrency=32)}
    assert len(done) == n and all(isinstance(o, CallResult) for o in done.values())
    return {o.transaction_id for o in done.values() if isinstance(o, CallResult)}


async def test_grouped_trail_written_once_across_a_writer_restart_and_a_resent_group(
    own_stack: Stack,
) -> None:
    st = own_stack
    sub = "gia-" + uuid.uuid4().hex[:6]
    txns = await _stream_of(st, sub, 40)
    st.stop_proc("audit-0")  # the writer restarts mid-stream
    txns |= await _stream_of(st, sub, 40)
    forged = [_event(txn=f"resent-{i}") for i in range(3)]
    group = AuditGroup(forged, [_encode(e) for e in forged])
    async with connected(st, "execute") as execute:  # a group published twice (its ack lost)
        js = execute.nc.jetstream()
        first = await js.publish("handshake.audit.execute.group", group.data,
                                 headers={"Nats-Msg-Id": group.msg_id})  # fmt: skip
        again = await js.publish("handshake.audit.execute.group", group.data,
                                 headers={"Nats-Msg-Id": group.msg_id})  # fmt: skip
        assert again.duplicate and again.seq == first.seq
    st.start_worker("audit", 0)
    txns |= await _stream_of(st, sub, 40)
    deadline = time.monotonic() + 30
    while True:
        mine = [e for e in events(st) if e.get("txn") in txns]
        if len(mine) >= 4 * len(txns) or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.3)
    kinds = ["authorize.granted", "execute.intent", "execute.succeeded", "receipt.issued"]
    for txn in txns:
        assert sorted(e["kind"] for e in mine if e["txn"] == txn) == kinds, txn
    ids = [e["id"] for e in events(st)]
    assert len(ids) == len(set(ids)), "an event was written twice"
    assert [e["txn"] for e in events(st) if e["txn"].startswith("resent-")] == [
        f"resent-{i}" for i in range(3)
    ]
    async with connected(st, "operator") as operator:
        msgs = await _messages(operator.nc)
    grouped = [m for m in msgs if m.subject.endswith(".group")]
    assert grouped and len(msgs) < len(ids), "a batch's events travel as groups"
    lines = [e for e in read_entries(log_path(st)) if e["kind"] == "event"]
    assert sum(1 for e in lines if "part" in e["body"]) >= 3 * len(txns)
    jwks = json.loads((st.home / "keys" / "audit.jwks.json").read_text())
    assert verify_log(log_path(st), jwks).ok
    # A group's line edited: caught as before.
    copy = st.home / "tampered" / "audit.log"
    copy.parent.mkdir()
    shutil.copy(side_file(log_path(st)), side_file(copy))
    text = log_path(st).read_text().splitlines(keepends=True)
    i = next(n for n, line in enumerate(text) if '"part":[1,' in line)
    text[i] = text[i].replace('"kind":"', '"kind":"x', 1)
    copy.write_text("".join(text))
    bad = verify_log(copy, jwks)
    assert not bad.ok and bad.bad_line == i + 1
