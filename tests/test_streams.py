"""Streams: created with the configured replicas; an operator's stream is never changed,
and an unsafe one stops the audit worker with one clear line."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import nats
import pytest
from nats.js.api import RetentionPolicy, StorageType, StreamConfig

from mcp_handshake.services.dev.devstack import Stack, StackSpec
from mcp_handshake.services.runtime.approvals import STREAM as APPROVALS
from mcp_handshake.services.runtime.audit import STREAM as AUDIT
from mcp_handshake.shared.settings import Settings
from tests.conftest import make_stack

WEEK = 7 * 86400.0


@pytest.fixture
def bare(tmp_path: Path) -> Iterator[Stack]:
    """NATS and the configuration only: the test creates streams, then starts workers."""
    st = make_stack(tmp_path / "home", StackSpec(authorize=1, execute=0, executor=0,
                                                 approval=0, audit=1))  # fmt: skip
    st.start_nats()
    st.start_target()
    try:
        yield st
    finally:
        st.stop()


def _audit(**kw: object) -> StreamConfig:
    base: dict[str, object] = dict(
        name=AUDIT, subjects=["handshake.audit.>"], retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE, max_age=2 * WEEK, duplicate_window=WEEK, max_msgs=123456,
    )  # fmt: skip
    base.update(kw)
    return StreamConfig(**base)  # type: ignore[arg-type]


async def _create(st: Stack, *configs: StreamConfig) -> None:
    nc = await nats.connect(**st.connect_options("operator"))
    try:
        for config in configs:
            await nc.jetstream().add_stream(config)
    finally:
        await nc.close()


def _exit_line(st: Stack, name: str, timeout: float = 30.0) -> tuple[int, str]:
    proc = next(p for p in st.procs if p.name == name)
    deadline = time.monotonic() + timeout
    while proc.popen.poll() is None:
        assert time.monotonic() < deadline, f"{name} did not exit"
        time.sleep(0.05)
    text = (st.logs / f"{name}.log").read_text()
    assert "Traceback" not in text, text
    lines = [line for line in text.splitlines() if line.strip()]
    return proc.popen.returncode, lines[-1]


async def test_an_operators_streams_are_left_as_configured(bare: Stack) -> None:
    approvals = StreamConfig(
        name=APPROVALS, subjects=[Settings().subjects.approval_requests],
        retention=RetentionPolicy.WORK_QUEUE, max_age=999.0, duplicate_window=30.0,
    )  # fmt: skip
    await _create(bare, _audit(), approvals)
    await bare.start()  # the audit and authorize workers start on them
    nc = await nats.connect(**bare.connect_options("operator"))
    try:
        audit = (await nc.jetstream().stream_info(AUDIT)).config
        queue = (await nc.jetstream().stream_info(APPROVALS)).config
    finally:
        await nc.close()
    assert (audit.max_age, audit.max_msgs, audit.duplicate_window) == (2 * WEEK, 123456, WEEK)
    assert (queue.max_age, queue.duplicate_window) == (999.0, 30.0)


async def test_a_message_size_too_small_for_a_group_stops_the_audit_worker(
    bare: Stack,
) -> None:
    """A group of audit events may be up to 256 KiB: a stream limited below it would
    refuse every group, and the workers' outboxes would fill."""
    await _create(bare, _audit(max_msg_size=64 * 1024))
    bare.start_worker("audit")
    code, line = _exit_line(bare, "audit-0")
    assert code == 1
    assert line.startswith("failed: stream HANDSHAKE_AUDIT is unsafe: max message size is 65536")


async def test_a_short_duplicate_window_stops_the_audit_worker(bare: Stack) -> None:
    await _create(bare, _audit(duplicate_window=60.0))
    bare.start_worker("audit")
    code, line = _exit_line(bare, "audit-0")
    assert code == 1
    assert line.startswith("failed: stream HANDSHAKE_AUDIT is unsafe: duplicate window is 60 s")
    nc = await nats.connect(**bare.connect_options("operator"))
    try:
        assert (await nc.jetstream().stream_info(AUDIT)).config.duplicate_window == 60.0
    finally:
        await nc.close()


async def test_a_wrong_retention_stops_the_audit_worker(bare: Stack) -> None:
    await _create(bare, _audit(retention=RetentionPolicy.INTEREST))
    bare.start_worker("audit")
    code, line = _exit_line(bare, "audit-0")
    assert code == 1 and "retention is interest, needs limits" in line


async def test_streams_are_created_with_the_configured_replicas(bare: Stack) -> None:
    # One server cannot hold three replicas: the worker says so rather than creating R1.
    bare.extra_env["HANDSHAKE_STREAM_REPLICAS"] = "3"
    bare.start_worker("audit")
    code, line = _exit_line(bare, "audit-0")
    assert code == 1
    assert line.startswith("failed: cannot create stream HANDSHAKE_AUDIT with 3 replica(s)")
