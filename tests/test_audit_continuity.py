"""Audit continuity: a reset or a hole in the stream halts the writer until an operator
accepts it; checkpoint copies (side file, ``HANDSHAKE_CHECKPOINTS``) must match the log."""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from pathlib import Path
from typing import Any

import nats
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from nats.js.errors import APIError

from mcp_handshake.services.audit.chain import hashed_line, read_entries, side_file
from mcp_handshake.services.audit.checkpoints import STREAM as CHECKPOINTS
from mcp_handshake.services.audit.continuity import Found
from mcp_handshake.services.audit.log import AuditLogWriter
from mcp_handshake.services.audit.main import signing_key_path
from mcp_handshake.services.audit.verify import verify_log
from mcp_handshake.services.dev.cli._status import snapshot
from mcp_handshake.services.dev.devstack import Stack
from mcp_handshake.services.runtime.audit import STREAM, ensure_audit_stream
from mcp_handshake.services.runtime.service import discover
from mcp_handshake.shared.keys import public_jwk
from mcp_handshake.shared.settings import Settings
from tests.conftest import Raw, connected
from tests.test_cli import cli

RATE = {"base": "EUR", "quote": "USD"}

pytestmark = pytest.mark.fault


def said(out: Any) -> str:
    """A command's output with rich's line wrapping undone."""
    return " ".join(str(out.stdout).split())


def log_path(stack: Stack) -> Path:
    return stack.home / "audit" / "audit.log"


def jwks(stack: Stack) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((stack.home / "keys" / "audit.jwks.json").read_text())
    return data


def txns_in_log(stack: Stack) -> set[str]:
    return {
        e["body"]["event"].get("txn")
        for e in read_entries(log_path(stack))
        if e["kind"] == "event" and isinstance(e["body"]["event"], dict)
    }


async def traffic(raw: Raw, n: int) -> list[str]:
    alice = raw.session("alice", "billing")
    out = []
    for _ in range(n):
        g = (await raw.authorize(alice, "payments.get_exchange_rate", RATE)).body
        assert (await raw.execute(alice, g, "payments.get_exchange_rate", RATE)).error is None
        out.append(str(g["transaction_id"]))
    return out


async def until(predicate: Any, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.2)


async def audit_stats(operator: Raw) -> dict[str, Any]:
    for s in await discover(operator.nc, "STATS", 0.4):
        if s["name"] == "handshake-audit" and (s.get("data") or {}).get("role") != "standby":
            data: dict[str, Any] = s["data"]
            return data
    return {}


async def until_stats(operator: Raw, check: Any, timeout: float = 20.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        stats = await audit_stats(operator)
        if check(stats):
            return stats
        assert time.monotonic() < deadline, stats
        await asyncio.sleep(0.3)


async def test_stream_recreated_halts_until_resume_and_loses_nothing(own_stack: Stack) -> None:
    async with connected(own_stack) as raw, connected(own_stack, "operator") as operator:
        before = await traffic(raw, 3)
        await until(lambda: set(before) <= txns_in_log(own_stack))
        js = operator.nc.jetstream()
        await js.delete_stream(STREAM)
        await ensure_audit_stream(js, 900)
        after = await traffic(raw, 3)  # sequences 1.. of the new stream
        stats = await until_stats(operator, lambda s: s.get("role") == "halted")
        assert stats["gap"]["reason"] == "reset" and stats["gap"]["after"] > 0
        assert stats["gap"]["found"]["created"] != stats["gap"]["stream"]["created"]
        await until_stats(operator, lambda s: (s.get("lag") or 0) > 0)
        assert not set(after) & txns_in_log(own_stack), "written across a reset"
        snap = await snapshot(own_stack.settings("operator"), operator.nc)  # `status`
        assert snap["audit_halted"]["reason"] == "reset" and snap["audit_lag"] >= 1
        halted = verify_log(log_path(own_stack), jwks(own_stack))
        assert not halted.ok and "not accepted" in halted.reason, halted
        alarm = (own_stack.logs / "audit-0.log").read_text()
        assert "AUDIT WRITER HALTED" in alarm
        # Nothing moves without the operator's explicit acceptance.
        refused = await asyncio.to_thread(cli, own_stack, "audit", "resume")
        assert refused.returncode != 0
        ok = await asyncio.to_thread(
            cli, own_stack, "audit", "resume", "--accept-gap", "--by", "olga", "--note", "drill"
        )
        assert ok.returncode == 0, ok.stdout + ok.stderr
        assert "resumed" in said(ok)
        await until(lambda: set(after) <= txns_in_log(own_stack))
        more = await traffic(raw, 2)
        await until(lambda: set(more) <= txns_in_log(own_stack))
        stats = await until_stats(operator, lambda s: s.get("role") == "active")
        assert "gap" not in stats
    result = verify_log(log_path(own_stack), jwks(own_stack))
    assert result.ok, result
    (gap,) = result.gaps
    assert gap["reason"] == "reset" and gap["accepted"]["by"].startswith("olga")
    out = cli(own_stack, "audit", "verify")
    assert out.returncode == 0 and "GAP (accepted)" in said(out), out.stdout


async def test_a_hole_in_the_sequence_halts_the_writer(own_stack: Stack) -> None:
    async with connected(own_stack) as raw, connected(own_stack, "operator") as operator:
        first = await traffic(raw, 1)
        await until(lambda: set(first) <= txns_in_log(own_stack))
        own_stack.stop_proc("audit-0")
        await traffic(raw, 3)
        js = operator.nc.jetstream()
        info = await js.stream_info(STREAM)
        await js.delete_msg(STREAM, info.state.last_seq - 2)  # an event deleted unread
        own_stack.start_worker("audit", 0)
        stats = await until_stats(operator, lambda s: s.get("role") == "halted")
        gap = stats["gap"]
        assert gap["reason"] == "gap" and gap["next"] == gap["after"] + 2
        await until_stats(operator, lambda s: (s.get("lag") or 0) > 0)
    result = verify_log(log_path(own_stack), jwks(own_stack))
    assert not result.ok and f"{gap['after'] + 1}..{gap['after'] + 1}" in result.reason


async def _sealed_log(stack: Stack, n: int = 6) -> None:
    """Traffic, then the audit worker stopped: its last act is a signed checkpoint."""
    async with connected(stack) as raw:
        done = await traffic(raw, n)
        await until(lambda: set(done) <= txns_in_log(stack))
    stack.stop_proc("audit-0")


def _copy(stack: Stack, to: Path) -> Path:
    to.mkdir()
    log = log_path(stack)
    shutil.copy(log, to / log.name)
    shutil.copy(side_file(log), side_file(to / log.name))
    return to / log.name


async def test_checkpoint_side_file_trimmed_deleted_or_changed_fails(
    own_stack: Stack, tmp_path: Path
) -> None:
    await _sealed_log(own_stack)
    keys = jwks(own_stack)
    clean = verify_log(log_path(own_stack), keys)
    assert clean.ok and clean.checkpoints >= 2, clean
    trimmed = _copy(own_stack, tmp_path / "trimmed")
    lines = side_file(trimmed).read_text().splitlines(keepends=True)
    side_file(trimmed).write_text("".join(lines[:-1]))
    r = verify_log(trimmed, keys, settle_s=0)
    assert not r.ok and "trimmed" in r.reason, r
    gone = _copy(own_stack, tmp_path / "gone")
    side_file(gone).unlink()
    r = verify_log(gone, keys)
    assert not r.ok and "checkpoint file missing" in r.reason, r
    changed = _copy(own_stack, tmp_path / "changed")
    cp = json.loads(lines[0])
    side_file(changed).write_text(
        json.dumps({**cp, "at": cp["at"] + 1}) + "\n" + "".join(lines[1:])
    )
    r = verify_log(changed, keys)
    assert not r.ok and "bad signature" in r.reason, r
    cli_out = cli(own_stack, "audit", "verify", "--log", str(gone))
    assert cli_out.returncode == 1 and "checkpoint file missing" in said(cli_out)


async def test_log_cut_before_a_published_checkpoint_fails_against_stream(
    own_stack: Stack,
) -> None:
    async with connected(own_stack, "operator") as operator:
        await _sealed_log(own_stack)
        own_stack.start_worker("audit", 0)  # publishes the closing checkpoint on take-over
        await until_stats(operator, lambda s: s.get("unpublished_checkpoints") == 0)
        published = (await operator.nc.jetstream().stream_info(CHECKPOINTS)).state.messages
        assert published >= 2
    own_stack.stop_proc("audit-0")
    ok = cli(own_stack, "audit", "verify", "--against-stream")
    assert ok.returncode == 0 and "every published checkpoint present" in said(ok), ok.stdout
    # Cut the log right after its first checkpoint, and the side file to match:
    # locally consistent, but the stream remembers the later checkpoints.
    log = log_path(own_stack)
    entries = list(read_entries(log))
    first_cp = next(e["seq"] for e in entries if e["kind"] == "checkpoint")
    kept = log.read_bytes().splitlines(keepends=True)[:first_cp]
    log.write_bytes(b"".join(kept))
    side = side_file(log)
    side.write_text(side.read_text().splitlines(keepends=True)[0])
    assert verify_log(log, jwks(own_stack)).ok
    cut = cli(own_stack, "audit", "verify", "--against-stream")
    assert cut.returncode == 1 and "log truncated" in said(cut), cut.stdout


async def test_nobody_can_purge_or_delete_published_checkpoints(own_stack: Stack) -> None:
    async with connected(own_stack, "operator") as operator:
        await until_stats(operator, lambda s: s.get("role") == "active")
        js = operator.nc.jetstream()
        info = await js.stream_info(CHECKPOINTS)
        assert info.config.deny_delete and info.config.deny_purge
        for identity in ("execute", "audit"):  # not even the stream's own writer
            async with connected(own_stack, identity) as worker:
                wjs = worker.nc.jetstream(timeout=1.0)
                with pytest.raises((nats.errors.Error, TimeoutError, APIError)):
                    await wjs.purge_stream(CHECKPOINTS)
                with pytest.raises((nats.errors.Error, TimeoutError, APIError)):
                    await wjs.delete_stream(CHECKPOINTS)
        with pytest.raises(APIError):
            await js.purge_stream(CHECKPOINTS)
        await _ensure_one_checkpoint(own_stack, operator)
        info = await js.stream_info(CHECKPOINTS)
        with pytest.raises(APIError):
            await js.delete_msg(CHECKPOINTS, info.state.first_seq)
        assert (await js.stream_info(CHECKPOINTS)).state.messages == info.state.messages


async def _ensure_one_checkpoint(stack: Stack, operator: Raw) -> None:
    async with connected(stack) as raw:
        done = await traffic(raw, 1)
    await until(lambda: set(done) <= txns_in_log(stack))
    js = operator.nc.jetstream()
    deadline = time.monotonic() + 20
    while (await js.stream_info(CHECKPOINTS)).state.messages == 0:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.3)


def test_the_signing_key_may_not_live_with_the_log(tmp_path: Path) -> None:
    settings = Settings.from_env({"HANDSHAKE_HOME": str(tmp_path)})
    key = tmp_path / "keys" / "audit.pem"
    assert signing_key_path(settings, key) == key
    with pytest.raises(ValueError, match="must not be under"):
        signing_key_path(settings, tmp_path / "audit" / "audit.pem")


def _writer(path: Path) -> tuple[AuditLogWriter, dict[str, Any]]:
    key = Ed25519PrivateKey.generate()
    w = AuditLogWriter(path, key, checkpoint_every=2)
    assert w.try_lock()
    w.open()
    return w, {"keys": [public_jwk(key)]}


def test_gap_records_are_signed_and_an_unrecorded_jump_fails(tmp_path: Path) -> None:
    """Without servers: the writer refuses a jump; verify tells accepted from unaccepted."""
    w, keys = _writer(tmp_path / "audit.log")
    old = {"stream": STREAM, "created": "2026-01-01T00:00:00+00:00", "first_seq": 1}
    new = {**old, "created": "2026-01-02T00:00:00+00:00"}
    w.begin(old)
    assert w.append(1, {"kind": "x"}) and w.append(2, {"kind": "x"})
    assert not w.append(4, {"kind": "x"}), "a jump must not be written"
    w.halt(Found("reset", 2, 1, old, new))
    assert not w.append(3, {"kind": "x"}), "a halted writer writes nothing"
    w.sync()
    halted = verify_log(w.path, keys)
    assert not halted.ok and "not accepted" in halted.reason
    w.accept("olga", "drill", new, 1)
    assert w.append(1, {"kind": "y"})
    w.close()
    result = verify_log(w.path, keys)
    assert result.ok, result
    assert [g["accepted"]["by"] for g in result.gaps] == ["olga"]
    # An event line forged across a jump (re-chained and re-signed by someone holding
    # the key) is still caught by continuity.
    w2, keys2 = _writer(tmp_path / "b" / "audit.log")
    w2.begin(old)
    assert w2.append(1, {})
    w2._tail.last_stream_seq = 5  # what the old writer did: skip to wherever the stream is
    assert w2.append(6, {})
    w2.close()
    bad = verify_log(w2.path, keys2)
    assert not bad.ok and "sequences 2..5 are not in the log" in bad.reason


def test_a_log_from_before_stream_headers_is_adopted(tmp_path: Path) -> None:
    w, keys = _writer(tmp_path / "audit.log")
    w._tail.last_stream_seq = 40  # older logs started wherever the stream was
    w._tail.stream = None
    for seq in (41, 42):
        line, h = hashed_line(w._tail.seq + 1, w._tail.h, "event", {"sseq": seq, "event": {}})
        w._fh.write(line)
        w._tail.seq, w._tail.h, w._tail.last_stream_seq = w._tail.seq + 1, h, seq
    w.begin({"stream": STREAM, "created": "2026-01-01T00:00:00+00:00", "first_seq": 1})
    assert w.append(43, {})
    w.close()
    assert verify_log(w.path, keys).ok
