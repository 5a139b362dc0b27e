"""Per-route request counts for discovery (``$SRV.STATS``), so ``mcp-handshake status``
shows the gateway's requests, errors, latency and outcomes like any worker's."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from nats.aio.client import Client as NATS
from starlette.requests import Request
from starlette.responses import Response

from mcp_handshake.services.runtime.endpoint import Endpoint, EndpointStats
from mcp_handshake.shared.errors import HandshakeError

__all__ = ["ErrorResponse", "HttpRoute", "counted"]

Handler = Callable[[Request], Awaitable[Response]]


class ErrorResponse(Response):
    """A protocol error's response, with its code (for the counts)."""

    code = "internal"


class HttpRoute(Endpoint):
    """One HTTP route, as discovery reports an endpoint: it counts, and serves nothing on
    NATS (so it does not build what a NATS endpoint needs)."""

    def __init__(self, method: str, path: str) -> None:  # no NATS endpoint to set up
        # /v1/status/{txn} -> status; /v1/approvals -> approvals-list;
        # /v1/approvals/{txn}/decide -> approvals-decide (as the approval worker names them)
        parts = [p for p in path.split("/")[2:] if "{" not in p]
        if parts == ["approvals"]:
            parts.append("list")
        self.name = "-".join(parts)
        self.subject = f"{method} {path}"
        self.queue_group = "gateway"
        self.stats = EndpointStats()

    async def start(self, nc: NATS) -> None:
        return None

    async def stop(self, timeout: float = 10.0) -> None:
        return None

    def record(self, code: str, elapsed_ns: int) -> None:
        stats = self.stats
        stats.num_requests += 1
        stats.outcomes[code] += 1
        stats.processing_time_ns += elapsed_ns
        if code != "ok":
            stats.num_errors += 1
            stats.last_error = code


def counted(route: HttpRoute, handler: Handler) -> Handler:
    async def run(request: Request) -> Response:
        start = time.perf_counter_ns()
        code = "internal"
        try:
            response = await handler(request)
            code = response.code if isinstance(response, ErrorResponse) else "ok"
            return response
        except HandshakeError as exc:
            code = exc.code
            raise
        finally:
            route.record(code, time.perf_counter_ns() - start)

    return run
