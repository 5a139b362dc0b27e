"""Wiring of an audit worker: the one writer of the audit log (others stand by).

The writer (``follow``) reads ``HANDSHAKE_AUDIT`` in order from the first
stream sequence not yet in the log, so events published while no audit worker
ran are written when one starts, and an event seen twice is written once. A
reset or a hole in the stream halts it (``status`` shows ``role: halted`` and
the gap, the lag stays above zero) until ``audit resume --accept-gap``.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

from nats.aio.client import Client as NATS
from nats.errors import Error as NatsError
from opentelemetry import metrics as otel

from mcp_handshake.services.audit.checkpoints import ensure_checkpoint_stream
from mcp_handshake.services.audit.continuity import identity, same_stream
from mcp_handshake.services.audit.control import listen
from mcp_handshake.services.audit.follow import WriterState, follow
from mcp_handshake.services.audit.log import AuditLogWriter
from mcp_handshake.services.runtime.approvals import ensure_approval_stream
from mcp_handshake.services.runtime.audit import STREAM, ensure_audit_stream
from mcp_handshake.services.runtime.build import duplicate_window, open_kit
from mcp_handshake.services.runtime.telemetry import Metrics
from mcp_handshake.services.runtime.worker import Worker
from mcp_handshake.shared.keys import load_private_key
from mcp_handshake.shared.settings import Settings

__all__ = ["audit_log_path", "build"]

log = logging.getLogger(__name__)


def audit_log_path(settings: Settings) -> Path:
    return settings.home / "audit" / "audit.log"


def signing_key_path(settings: Settings, key: Path) -> Path:
    """The audit key, refused if it lies in the log's directory: whoever can rewrite the
    log must not also be able to re-sign it."""
    log_dir = audit_log_path(settings).parent.resolve()
    if key.resolve().is_relative_to(log_dir):
        raise ValueError(f"the audit signing key {key} must not be under the log's directory")
    return key


async def _lag(nc: NATS, writer: AuditLogWriter, state: WriterState) -> float | None:
    """Events in the stream not in the log; never zero while the writer is halted."""
    try:
        info = await nc.jetstream().stream_info(STREAM)
    except (NatsError, TimeoutError):
        return 1.0 if state.role == "halted" else None
    if same_stream(writer.stream, identity(info)):
        lag = max(info.state.last_seq - writer.last_stream_seq, 0)
    else:
        lag = info.state.messages
    return float(max(lag, 1) if state.role == "halted" else lag)


async def _watch_lag(nc: NATS, writer: AuditLogWriter, state: WriterState,
                     metrics: Metrics) -> None:  # fmt: skip
    while True:
        if state.role != "standby":
            lag = await _lag(nc, writer, state)
            if lag is None:
                metrics.gauges.pop("audit_lag", None)
            else:
                metrics.gauges["audit_lag"] = lag
            metrics.gauges["audit_halted"] = 1.0 if state.role == "halted" else 0.0
        await asyncio.sleep(1.0)


def _halted_gauge(state: WriterState) -> None:
    def observe(options: Any) -> list[Any]:
        if state.role == "standby":
            return []
        return [otel.Observation(1.0 if state.role == "halted" else 0.0, {"worker": "audit"})]

    otel.get_meter("mcp_handshake").create_observable_gauge(
        "handshake.audit.halted",
        callbacks=[observe],
        description="1 while the audit writer is stopped at a gap or reset it may not skip",
    )


async def build(settings: Settings, nc: NATS) -> Worker:
    kit = open_kit(settings, nc, "audit")
    cfg = kit.config
    js = nc.jetstream()
    # The audit worker manages the streams; other workers wait for them.
    replicas = settings.stream_replicas
    await ensure_audit_stream(js, duplicate_window(kit.policy), replicas=replicas)
    await ensure_approval_stream(
        js, settings.subjects, kit.policy.max_lifetime_s + 60, replicas=replicas
    )
    await ensure_checkpoint_stream(js, replicas=replicas)
    key = signing_key_path(settings, cfg.resolve(cfg.keys.audit))
    writer = AuditLogWriter(audit_log_path(settings), load_private_key(key))
    state = WriterState()
    _halted_gauge(state)
    control = await listen(nc, writer, state)
    metrics = kit.metrics

    def stats() -> dict[str, Any]:
        out = {
            "role": state.role,
            "written": writer.written,
            "refused": state.refused,
            "last_stream_seq": writer.last_stream_seq,
            "lag": metrics.gauges.get("audit_lag"),
            "log": str(writer.path),
            "unpublished_checkpoints": len(writer.unpublished),
        }
        if writer.gap is not None:
            out["gap"] = writer.gap
        return out

    async def close() -> None:
        writer.close()
        try:
            await control.unsubscribe()
        except NatsError:
            pass

    return kit.worker(
        "Writes the hash-chained, signed audit log",
        [],
        background=[
            lambda: follow(nc, writer, state),
            lambda: _watch_lag(nc, writer, state, metrics),
        ],
        closers=[close],
        extra_stats=stats,
    )
