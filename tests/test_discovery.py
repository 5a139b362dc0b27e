"""Every worker kind is a NATS micro service: PING, INFO and STATS answer."""

from __future__ import annotations

import json

from mcp_handshake.services.dev.ready import ping_counts
from tests.conftest import Raw


async def test_ping_finds_every_worker(operator: Raw) -> None:
    counts = await ping_counts(operator.nc)
    assert counts["handshake-authorize"] == 2
    assert counts["handshake-execute"] == 2
    assert counts["handshake-executor"] == 1


async def test_info_and_stats(operator: Raw) -> None:
    msg = await operator.nc.request("$SRV.INFO.handshake-authorize", b"", timeout=2)
    info = json.loads(msg.data)
    assert info["type"] == "io.nats.micro.v1.info_response"
    subjects = {e["subject"]: e["queue_group"] for e in info["endpoints"]}
    assert subjects == {"handshake.v1.authorize": "authorize", "handshake.v1.tools": "authorize",
                        "handshake.v1.authorize.batch": "authorize"}  # fmt: skip
    msg = await operator.nc.request("$SRV.STATS.handshake-execute", b"", timeout=2)
    stats = json.loads(msg.data)
    assert stats["type"] == "io.nats.micro.v1.stats_response"
    names = {e["name"] for e in stats["endpoints"]}
    assert names == {"execute", "reconcile", "keys", "execute-batch"}
    for e in stats["endpoints"]:
        assert e["num_errors"] <= e["num_requests"]


async def test_agents_cannot_use_discovery(raw: Raw) -> None:
    """Only the operator (and workers answering) may use the $SRV subjects."""
    assert await ping_counts(raw.nc) == {}
