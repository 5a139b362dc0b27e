"""Waiting for a stack's workers: every expected micro service answers ``$SRV.PING``."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import nats
from nats.aio.client import Client as NATS

from mcp_handshake.services.dev.procs import Proc
from mcp_handshake.services.runtime.service import discover

__all__ = ["last_line", "ping_counts", "ready_timeout", "wait_services"]


async def ping_counts(nc: NATS, wait: float = 0.25) -> dict[str, int]:
    """How many instances of each micro service answer a ping."""
    counts: dict[str, int] = {}
    for answer in await discover(nc, "PING", wait):
        name = answer.get("name", "?")
        counts[name] = counts.get(name, 0) + 1
    return counts


async def wait_services(
    options: dict[str, Any],
    expected: dict[str, int],
    procs: Sequence[Proc],
    logs: Path,
    timeout: float | None = None,
) -> None:
    """Wait until ``expected[name]`` instances of each service answer; fail at once when
    one of ``procs`` has died, or at ``timeout`` (default: ``ready_timeout()``)."""
    deadline = time.monotonic() + (ready_timeout() if timeout is None else timeout)
    nc = await nats.connect(**options, connect_timeout=5)
    wait = 0.25
    try:
        while True:
            counts = await ping_counts(nc, wait)
            # A loaded machine answers late: each empty round listens longer (up to 2 s).
            wait = min(2.0, wait * 2) if not counts else 0.25
            if all(counts.get(k, 0) >= n for k, n in expected.items()):
                return
            dead = [p for p in procs if p.popen.poll() is not None]
            if dead or time.monotonic() > deadline:
                why = "".join(f"\n  {p.name} exited {p.popen.returncode}: {last_line(p)}"
                              for p in dead)  # fmt: skip
                names = [p.name for p in dead]
                raise RuntimeError(
                    f"stack did not come up (dead: {names}, seen: {counts}); see logs in {logs}"
                    + why
                )
            await asyncio.sleep(0.1)
    finally:
        await nc.close()


def ready_timeout() -> float:
    """How long a stack may take to come up: ``HANDSHAKE_STACK_READY_TIMEOUT_S``, 90 s by
    default (a loaded machine imports and connects a dozen processes slowly; a process
    that dies fails the wait at once, so the bound only matters for a hung start)."""
    return float(os.environ.get("HANDSHAKE_STACK_READY_TIMEOUT_S", "90"))


def last_line(proc: Proc) -> str:
    """The last line a process wrote to its log: a worker that gives up says why there."""
    try:
        lines = Path(proc.log.name).read_text(errors="replace").strip().splitlines()
    except (OSError, TypeError):
        return "(no log)"
    return lines[-1][-300:] if lines else "(empty log)"
