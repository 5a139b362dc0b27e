"""Audit groups attacked: a compromised worker's group claiming other kinds or other
workers, groups published where the bus forbids, an operation repeated in a batch (its
events must not be written twice), the gated execute intent (never in a group), and
the group's ``Nats-Msg-Id`` (it commits to its exact list of event ids)."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import msgspec
import nats
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from nats.js.errors import NoStreamResponseError

from mcp_handshake.services.audit.chain import read_entries
from mcp_handshake.services.audit.log import AuditLogWriter
from mcp_handshake.services.audit.verify import verify_log
from mcp_handshake.services.dev.devstack import Stack
from mcp_handshake.services.runtime.audit import AuditEvent
from mcp_handshake.services.runtime.audit_group import AuditGroup, expand, is_group, split
from mcp_handshake.shared.keys import public_jwk
from tests.conftest import Raw, connected
from tests.test_audit import events, log_path
from tests.test_audit_groups import STREAM_ID, _messages
from tests.test_batch import EXCHANGE, authorize_many, code, op

_encode = msgspec.json.encode
RATES = [{"base": "EUR", "quote": q} for q in ("USD", "GBP", "JPY")]


def _event(kind: str, txn: str, worker: str = "execute@h:1", **extra: Any) -> AuditEvent:
    return AuditEvent(kind=kind, id=f"{txn}.{kind}", at=time.time(), worker=worker,
                      outcome="ok", txn=txn, **extra)  # fmt: skip


# -- without servers ---------------------------------------------------------------------


def test_a_group_id_commits_to_its_exact_list_of_event_ids() -> None:
    """Two groups share a ``Nats-Msg-Id`` (the second dropped by the stream) only if
    they hold the same event ids in the same order: never a subset, a reordering, a
    repetition, or a single event's id."""
    a, b, c = (_event("execute.succeeded", f"t-{i}") for i in range(3))

    def gid(*evs: AuditEvent) -> str:
        return AuditGroup(evs, [_encode(e) for e in evs]).msg_id

    ids = {gid(a, b), gid(b, a), gid(a, b, c), gid(a, a, b), gid(a, b, b), gid(b, c)}
    assert len(ids) == 6
    assert all(i.startswith("group.") and len(i) == 6 + 64 for i in ids)
    assert not ids & {a.id, b.id, c.id}
    # Events with other contents but the same ids: the same group to the stream, as a
    # single event with the same id is the same event.
    later = _event("execute.succeeded", "t-0", sub="mallory")
    assert gid(later, b) == gid(a, b)


def test_every_split_part_fits_and_no_event_is_lost_or_repeated() -> None:
    """Events of random sizes split under many limits: each group envelope is within
    the limit, and the parts, expanded, are the events in order, each once."""
    import random

    rng = random.Random(7)
    evs = [_event("receipt.issued", f"t-{i}", detail="x" * rng.randrange(0, 900))
           for i in range(120)]  # fmt: skip
    encoded = [_encode(e) for e in evs]
    for limit in (1100, 2048, 4096, 10_000, 1 << 20):
        parts = split(evs, encoded, limit)
        got: list[Any] = []
        for p in parts:
            if isinstance(p, AuditGroup):
                assert len(p.data) <= limit and len(p) > 1
                got += expand("handshake.audit.execute.group", p.data)
            else:
                got.append(msgspec.to_builtins(p))
        assert [e["id"] for e in got] == [e.id for e in evs]
        msg_ids = [p.msg_id if isinstance(p, AuditGroup) else p.id for p in parts]
        assert len(msg_ids) == len(set(msg_ids))


def test_a_crash_between_every_line_of_a_group_resumes_without_loss_or_repeat(
    tmp_path: Path,
) -> None:
    """The writer killed after each line of a group of five (its next line half
    written): reopened, it writes the group's remaining events once, the log verifies,
    and every event is there exactly once."""
    key = Ed25519PrivateKey.generate()
    jwks = {"keys": [public_jwk(key)]}
    group = [{"id": f"g.{i}", "kind": "execute.succeeded"} for i in range(5)]
    for cut in range(1, 5):
        path = tmp_path / f"cut{cut}" / "audit.log"
        w = AuditLogWriter(path, key)
        assert w.try_lock()
        w.open()
        w.begin(STREAM_ID)  # the stream header, and a checkpoint
        assert w.append(1, {"id": "before"})
        assert w.append_group(2, group)
        w._fh.flush()
        _killed(w)
        lines = path.read_bytes().splitlines(keepends=True)
        assert len(lines) == 3 + 5
        # ``cut`` of the group's lines made it to disk, the next one half.
        path.write_bytes(b"".join(lines[: 3 + cut]) + lines[3 + cut][:20])
        again = AuditLogWriter(path, key)
        assert again.try_lock()
        again.open()
        assert again.last_stream_seq == 1
        assert again.append_group(2, group)
        assert again.append(3, {"id": "after"})
        again.close()
        written = [e["body"] for e in read_entries(path) if e["kind"] == "event"]
        ids = [b["event"]["id"] for b in written]
        assert ids == ["before"] + [g["id"] for g in group] + ["after"], cut
        assert [b.get("part") for b in written[1:6]] == [[i, 5] for i in range(5)]
        assert verify_log(path, jwks, settle_s=0).ok, cut


def _killed(w: AuditLogWriter) -> None:
    """What a killed writer leaves: its files as written, no closing checkpoint."""
    import os

    w._fh.close()
    w._side.close()
    assert w._lock_fd is not None
    os.close(w._lock_fd)
    w._fh = w._side = w._lock_fd = None


# -- the whole stack ---------------------------------------------------------------------


async def _wait_events(stack: Stack, txns: set[str], at_least: int) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 20
    while True:
        mine = [e for e in events(stack) if e.get("txn") in txns]
        if len(mine) >= at_least or time.monotonic() > deadline:
            await asyncio.sleep(0.5)  # anything written twice would follow now
            return [e for e in events(stack) if e.get("txn") in txns]
        await asyncio.sleep(0.2)


@pytest.mark.parametrize("receipts", ["single", "merkle"])
async def test_an_operation_repeated_in_a_batch_is_audited_once(
    stack: Stack, raw: Raw, receipts: str
) -> None:
    """The same operation (transaction, token) three times in one ``execute.batch``:
    it runs once, and the batch's group holds its events once (the stream de-duplicates
    ids of single messages only, not inside a group)."""
    alice = raw.session("alice", "billing")
    grants = await authorize_many(raw, alice, [(EXCHANGE, p) for p in RATES])
    ops = [op(g, EXCHANGE, p) for g, p in zip(grants, RATES, strict=True)]
    body = {"ops": [ops[0], ops[0], ops[1], ops[0], ops[2]], "receipts": receipts}
    r = await raw.request(raw.s.execute_batch, body, alice)
    assert r.error is None, r.body
    ran = [code(x) is None for x in r.body["results"]]
    txns = {g["transaction_id"] for g in grants}
    mine = await _wait_events(stack, txns, 4 * len(txns))
    ids = Counter(e["id"] for e in mine)
    assert all(n == 1 for n in ids.values()), [i for i, n in ids.items() if n > 1]
    first = grants[0]["transaction_id"]
    kinds = Counter(e["kind"] for e in mine if e["txn"] == first)
    assert kinds["execute.succeeded"] == 1 and kinds["receipt.issued"] == 1
    assert kinds["execute.intent"] == 1
    assert ran.count(True) >= 3
    if receipts == "merkle":
        leaves = [x["inclusion"]["leaf"]["txn"] for x in r.body["results"] if "inclusion" in x]
        assert sorted(set(leaves)) == sorted(txns)


async def test_the_execute_intent_is_never_in_a_group(stack: Stack, raw: Raw) -> None:
    """After batches and single calls: every ``execute.intent`` on the stream is its
    own message whose ``Nats-Msg-Id`` is its id (the at-most-once arbiter), and no
    group holds one."""
    alice = raw.session("alice", "billing")
    grants = await authorize_many(raw, alice, [(EXCHANGE, p) for p in RATES])
    for receipts in ("single", "merkle"):
        batch_grants = await authorize_many(raw, alice, [(EXCHANGE, p) for p in RATES])
        more = [op(g, EXCHANGE, p) for g, p in zip(batch_grants, RATES, strict=True)]
        r = await raw.request(raw.s.execute_batch, {"ops": more, "receipts": receipts}, alice)
        assert r.error is None
    single = await raw.execute(alice, grants[0], EXCHANGE, RATES[0])
    assert single.error is None
    async with connected(stack, "operator") as operator:
        msgs = await _messages(operator.nc)
    intents = 0
    for m in msgs:
        evs = expand(m.subject, m.data)
        if is_group(m.subject):
            assert not [e for e in evs if str(e.get("kind", "")).endswith("intent")]
        elif evs[0].get("kind") == "execute.intent":
            intents += 1
            assert m.headers and m.headers.get("Nats-Msg-Id") == evs[0]["id"]
    assert intents >= 7


async def test_a_compromised_workers_group_is_checked_event_by_event(own_stack: Stack) -> None:
    """An execute worker's credentials publish a group claiming events of other kinds
    and other worker kinds among genuine-looking ones: each such event is refused in
    its place, the others written, the stream sequence continuous, and the log
    verifies. The same credentials cannot publish a group under another kind's
    subject, and an agent none at all."""
    st = own_stack
    tag = "rt-" + uuid.uuid4().hex[:8]
    forged = [
        _event("execute.succeeded", f"{tag}-ok-1"),
        _event("authorize.granted", f"{tag}-kind"),  # an authorize event
        _event("execute.succeeded", f"{tag}-who", worker="authorize@h:1"),  # another kind
        _event("approval.decided", f"{tag}-appr", worker="approval@h:1"),
        _event("receipt.issued", f"{tag}-ok-2"),
    ]
    group = AuditGroup(forged, [_encode(e) for e in forged])
    async with connected(st, "execute") as execute:
        js = execute.nc.jetstream()
        await js.publish("handshake.audit.execute.group", group.data,
                         headers={"Nats-Msg-Id": group.msg_id})  # fmt: skip
        for subject in ("handshake.audit.authorize.group", "handshake.audit.approval.group"):
            with pytest.raises((nats.errors.Error, NoStreamResponseError, TimeoutError)):
                await js.publish(subject, group.data, timeout=2)
    async with connected(st) as agent_conn:
        with pytest.raises((nats.errors.Error, NoStreamResponseError, TimeoutError)):
            await agent_conn.nc.jetstream().publish(
                "handshake.audit.execute.group", group.data, timeout=2
            )
    deadline = time.monotonic() + 15
    lines: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        lines = [e["body"] for e in read_entries(log_path(st)) if e["kind"] == "event"]
        if sum(1 for b in lines if b.get("part")) >= 5:
            break
        await asyncio.sleep(0.2)
    parts = [b for b in lines if b.get("part")]
    assert [b["part"] for b in parts] == [[i, 5] for i in range(5)]
    got = [b["event"] for b in parts]
    assert [e.get("txn") for e in got] == [f"{tag}-ok-1", None, None, None, f"{tag}-ok-2"]
    assert all(e.get("refused") for e in got[1:4])
    ours = {"execute.succeeded", "receipt.issued"}
    assert not [e for e in events(st)
                if str(e.get("txn", "")).startswith(tag) and e.get("kind") not in ours]  # fmt: skip
    jwks = json.loads((st.home / "keys" / "audit.jwks.json").read_text())
    assert verify_log(log_path(st), jwks).ok


def _nested(depth: int) -> Any:
    """A JSON text nested ``depth`` lists deep, as a raw value."""
    return msgspec.Raw(b"[" * depth + b"]" * depth)


async def test_hostile_event_content_is_refused_and_the_writer_goes_on(own_stack: Stack) -> None:
    """A compromised execute worker publishes, alone and in groups, events whose
    ``kind`` is not a string (unhashable: a list, an object) and events nested deeper
    than any event of ours (deep enough that a JSON reader of the log would overflow
    its stack, or the writer's own decoder): each is recorded in its place as refused
    or unreadable (a group its decoder cannot read, as one unreadable record), the
    writer goes on to the next message, and ``audit verify`` passes."""
    st = own_stack
    tag = "rt-" + uuid.uuid4().hex[:8]

    def raw_event(n: int, **over: Any) -> bytes:
        base = {"kind": "execute.succeeded", "id": f"{tag}-{n}.x", "at": time.time(),
                "worker": "execute@h:1", "outcome": "ok", "txn": f"{tag}-{n}"}  # fmt: skip
        return msgspec.json.encode({**base, **over})

    def group(*evs: bytes) -> bytes:
        return msgspec.json.encode({"events": [msgspec.Raw(e) for e in evs], "v": 1})

    hostile = [
        ("execute.execute.succeeded", raw_event(1, kind=["execute.succeeded"])),
        ("execute.group", group(raw_event(2), raw_event(3, kind={"a": 1}), raw_event(4))),
        ("execute.execute.succeeded", raw_event(5, detail=_nested(990))),
        ("execute.execute.succeeded", raw_event(6, detail=_nested(3000))),
        ("execute.group", group(raw_event(7), raw_event(8, detail=_nested(900)))),
        ("execute.group", group(raw_event(9), raw_event(10, detail=_nested(3000)))),
        ("execute.execute.succeeded", raw_event(11)),  # the marker: written after them all
    ]
    async with connected(st, "execute") as execute:
        js = execute.nc.jetstream()
        for i, (subject, data) in enumerate(hostile):
            await js.publish(f"handshake.audit.{subject}", data,
                             headers={"Nats-Msg-Id": f"{tag}.{i}"})  # fmt: skip
    path = log_path(st)
    deadline = time.monotonic() + 20
    written: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        written = [e["body"]["event"] for e in read_entries(path) if e["kind"] == "event"]
        if any(e.get("txn") == f"{tag}-11" for e in written):
            break
        await asyncio.sleep(0.2)
    mine = [e.get("txn") for e in written if str(e.get("txn", "")).startswith(tag)]
    # A group too deep to decode is one unreadable record: its events are all its
    # publisher's, none of them another's lost.
    assert mine == [f"{tag}-{n}" for n in (2, 4, 7, 11)], mine
    bad = [e for e in written if e.get("refused") or e.get("unreadable")]
    assert len(bad) == 6, bad
    jwks = json.loads((st.home / "keys" / "audit.jwks.json").read_text())
    assert verify_log(path, jwks).ok


def test_the_writer_refuses_hostile_content_without_raising() -> None:
    """:func:`follow.entries` on the messages of the test above, without servers: no
    exception; a record in place of each hostile event; a line holding an event 990
    deep would be one no JSON reader of the log could read back."""
    from types import SimpleNamespace

    from mcp_handshake.services.audit.chain import hashed_line
    from mcp_handshake.services.audit.follow import WriterState, entries

    def ev(**over: Any) -> dict[str, Any]:
        return {"kind": "execute.succeeded", "id": "t.x", "at": 1.0, "worker": "execute@h:1",
                "outcome": "ok", "txn": "t", **over}  # fmt: skip

    def msg(subject: str, body: Any) -> Any:
        return SimpleNamespace(subject=f"handshake.audit.execute.{subject}",
                               data=msgspec.json.encode(body))  # fmt: skip

    state = WriterState()
    deep = ev(detail=_nested(990))
    line, _ = hashed_line(1, "0" * 64, "event", {"sseq": 1, "event": deep})
    with pytest.raises(RecursionError):
        json.loads(line)
    ref, unr, ok = {"refused"}, {"unreadable"}, {None}
    cases = [
        (msg("execute.succeeded", ev(kind=["execute.succeeded"])), [ref]),
        (msg("execute.succeeded", ev(kind={"a": 1})), [ref]),
        (msg("execute.succeeded", deep), [ref | unr]),  # which: by the stack's depth
        (msg("execute.succeeded", ev(detail=_nested(3000))), [unr]),
        (msg("group", {"events": [ev(), ev(kind=[]), ev(detail=_nested(50))]}), [ok, ref, ref]),
        (msg("group", {"events": [ev(), ev(detail=_nested(3000))]}), [unr]),
        (msg("execute.succeeded", ev(policies=["p-1", "p-2"])), [ok]),
    ]
    for m, want in cases:
        got, _ = entries(m, state)
        flags = [("refused" if e.get("refused") else "unreadable" if e.get("unreadable")
                  else None) for e in got]  # fmt: skip
        assert len(flags) == len(want), (m.subject, flags)
        assert all(f in w for f, w in zip(flags, want, strict=True)), (m.subject, flags)


@pytest.mark.parametrize(
    ("kind", "body"),
    [
        ("stream", ["not", "an", "object"]),
        ("stream", {**STREAM_ID, "start": "1"}),
        ("stream", {**STREAM_ID, "start": 1.5}),
        ("event", {"sseq": 1, "event": {"detail": _nested(995)}}),
        ("event", {"sseq": 1, "event": {"detail": _nested(5000)}}),
    ],
)
def test_audit_verify_reports_a_hostile_line_instead_of_raising(
    tmp_path: Path, kind: str, body: Any
) -> None:
    """A log line no writer of ours writes (a stream header that is not an object or
    whose start is not an integer; a line nested too deep for a JSON reader): ``audit
    verify`` names the line as bad, it does not end in an exception."""
    from mcp_handshake.services.audit.chain import GENESIS, hashed_line

    key = Ed25519PrivateKey.generate()
    path = tmp_path / "audit.log"
    line, _ = hashed_line(1, GENESIS, kind, body)
    path.write_bytes(line)
    result = verify_log(path, {"keys": [public_jwk(key)]}, settle_s=0)
    assert not result.ok and result.bad_line == 1, result
