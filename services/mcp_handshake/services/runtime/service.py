"""NATS micro service discovery ($SRV.PING / INFO / STATS) for our endpoints.

Speaks the NATS micro protocol (``io.nats.micro.v1.*`` schemas) so the
``nats micro`` CLI and any micro-aware client discover every worker. It is
ours rather than ``nats.micro``'s because our endpoints handle requests
concurrently and must never put ``repr(error)`` on the wire.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeout
from nats.nuid import NUID

from mcp_handshake.services.runtime.endpoint import Endpoint

__all__ = ["MicroService", "discover"]

_PREFIX = "$SRV"


class MicroService:
    def __init__(
        self,
        name: str,
        version: str,
        description: str,
        endpoints: Sequence[Endpoint],
        metadata: dict[str, str] | None = None,
        extra_stats: Callable[[], dict[str, Any]] | None = None,
    ) -> None:
        self.name = name
        self.id = NUID().next().decode()
        self.version = version
        self.description = description
        self.endpoints = list(endpoints)
        self.metadata = metadata or {}
        self._extra_stats = extra_stats
        self._subs: list[Any] = []
        self._started = datetime.now(UTC)

    async def start(self, nc: NATS) -> None:
        for endpoint in self.endpoints:
            await endpoint.start(nc)
        handlers = {"PING": self._ping, "INFO": self._info, "STATS": self._stats}
        for verb, handler in handlers.items():
            for subject in (
                f"{_PREFIX}.{verb}",
                f"{_PREFIX}.{verb}.{self.name}",
                f"{_PREFIX}.{verb}.{self.name}.{self.id}",
            ):
                self._subs.append(await nc.subscribe(subject, cb=self._responder(nc, handler)))
        self._started = datetime.now(UTC)
        await nc.flush()

    async def stop(self) -> None:
        for sub in self._subs:
            try:
                await sub.unsubscribe()
            except Exception:  # noqa: S112 - the connection may already be closed
                continue
        self._subs.clear()
        for endpoint in self.endpoints:
            await endpoint.stop()

    def _responder(self, nc: NATS, build: Callable[[], dict[str, Any]]) -> Any:
        async def respond(msg: Msg) -> None:
            if msg.reply:
                await nc.publish(msg.reply, json.dumps(build()).encode())

        return respond

    def _identity(self, kind: str) -> dict[str, Any]:
        return {
            "type": f"io.nats.micro.v1.{kind}_response",
            "name": self.name,
            "id": self.id,
            "version": self.version,
            "metadata": self.metadata,
        }

    def _ping(self) -> dict[str, Any]:
        return self._identity("ping")

    def _info(self) -> dict[str, Any]:
        return {
            **self._identity("info"),
            "description": self.description,
            "endpoints": [
                {"name": e.name, "subject": e.subject, "queue_group": e.queue_group, "metadata": {}}
                for e in self.endpoints
            ],
        }

    def _stats(self) -> dict[str, Any]:
        endpoints = []
        for e in self.endpoints:
            s = e.stats
            endpoints.append(
                {
                    "name": e.name,
                    "subject": e.subject,
                    "queue_group": e.queue_group,
                    "num_requests": s.num_requests,
                    "num_errors": s.num_errors,
                    "last_error": s.last_error,
                    "processing_time": s.processing_time_ns,
                    "average_processing_time": s.processing_time_ns // max(s.num_requests, 1),
                    "data": {"outcomes": dict(s.outcomes)},
                }
            )
        body = {
            **self._identity("stats"),
            "started": self._started.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "endpoints": endpoints,
        }
        if self._extra_stats is not None:
            body["data"] = self._extra_stats()
        return body


async def discover(nc: NATS, verb: str = "PING", wait: float = 0.25) -> list[dict[str, Any]]:
    """Every micro service's answer to ``$SRV.<verb>`` within ``wait`` seconds."""
    inbox = nc.new_inbox()
    sub = await nc.subscribe(inbox)
    answers: list[dict[str, Any]] = []
    try:
        await nc.publish(f"{_PREFIX}.{verb}", b"", reply=inbox)
        loop = asyncio.get_running_loop()
        end = loop.time() + wait
        while (left := end - loop.time()) > 0:
            try:
                msg = await sub.next_msg(timeout=left)
            except NatsTimeout:
                break
            if msg.data:  # an empty message is a "no responders" status
                answers.append(json.loads(msg.data))
    finally:
        await sub.unsubscribe()
    return answers
