"""``SyncHandshakeClient``: the client's API for synchronous code and other event loops.

nats-py binds a connection to the event loop that opened it, so this client owns
one private loop on a daemon thread and runs every operation there. Any thread, and
any other event loop (through ``arun``), may call it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Coroutine
from types import TracebackType
from typing import Any, TypeVar

import jwt

from mcp_handshake.shared.errors import HandshakeError
from mcp_handshake.shared.wire import DecideReply, Grant, PendingApproval, StatusReply, ToolInfo

from ._client import CallResult, HandshakeClient, PendingCall

__all__ = ["SyncHandshakeClient"]

T = TypeVar("T")


class SyncHandshakeClient:
    """``HandshakeClient`` with blocking methods, for synchronous frameworks and threads.

    ```python
    with SyncHandshakeClient.from_env() as hs:
        print([t.name for t in hs.tools()])
        res = hs.call("payments.get_exchange_rate", {"base": "EUR", "quote": "USD"})
    ```

    The arguments are ``HandshakeClient``'s (or pass ``client=`` an unconnected one).
    Every method blocks the calling thread until the operation is done; calls from
    several threads at once share one NATS connection and run concurrently. The
    connection opens on ``__enter__``/``connect()`` or on first use; ``close()`` (or
    leaving the ``with`` block) drains it and stops the loop thread. Code already
    running in an event loop can ``await hs.arun(hs.client.call(...))`` instead of
    blocking that loop.
    """

    def __init__(self, *args: Any, client: HandshakeClient | None = None, **kwargs: Any) -> None:
        self.client = client if client is not None else HandshakeClient(*args, **kwargs)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="handshake-client-loop", daemon=True
        )
        self._thread.start()
        self._connected: asyncio.Future[None] | None = None
        self._closed = False
        self._close_lock = threading.Lock()

    @classmethod
    def from_env(cls, **overrides: Any) -> SyncHandshakeClient:
        """Configured like ``HandshakeClient.from_env()`` (the CLI's settings)."""
        return cls(client=HandshakeClient.from_env(**overrides))

    def __enter__(self) -> SyncHandshakeClient:
        self.connect()
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __del__(self) -> None:
        # A forgotten close() must not leave a loop thread spinning forever.
        if not getattr(self, "_closed", True) and self._loop.is_running():
            self._loop.call_soon_threadsafe(self._loop.stop)

    # -- running coroutines on the loop thread ---------------------------------------

    def _submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        if self._closed:
            coro.close()
            raise RuntimeError("SyncHandshakeClient is closed")
        return asyncio.run_coroutine_threadsafe(self._connected_then(coro), self._loop)

    async def _connected_then(self, coro: Coroutine[Any, Any, T]) -> T:
        # One connect however many threads arrive first; runs on the loop thread only.
        if self._connected is None:
            self._connected = asyncio.ensure_future(self.client.connect())
        try:
            await asyncio.shield(self._connected)
        except BaseException:
            coro.close()
            self._connected = None  # a later call may try again
            raise
        return await coro

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run a coroutine of ``self.client`` on the loop thread and return its result."""
        if threading.current_thread() is self._thread:
            coro.close()
            raise RuntimeError("SyncHandshakeClient called from its own loop; await instead")
        return self._submit(coro).result()

    async def arun(self, coro: Coroutine[Any, Any, T]) -> T:
        """From another event loop: await a coroutine of ``self.client`` without blocking."""
        return await asyncio.wrap_future(self._submit(coro))

    # -- lifecycle -------------------------------------------------------------------

    def connect(self) -> None:
        self.run(asyncio.sleep(0))

    def close(self) -> None:
        """Drain the connection and stop the loop thread; idempotent."""
        with self._close_lock:
            if self._closed:
                return
            try:
                if self._connected is not None:
                    asyncio.run_coroutine_threadsafe(self.client.close(), self._loop).result()
            finally:
                self._closed = True
                self._loop.call_soon_threadsafe(self._loop.stop)
                self._thread.join()
                self._loop.close()

    @property
    def closed(self) -> bool:
        return self._closed

    # -- the client's API ------------------------------------------------------------

    def tools(self) -> list[ToolInfo]:
        """The tools this caller may use, with their params JSON Schemas."""
        return self.run(self.client.tools())

    def authorize(
        self, tool: str, params: dict[str, Any], context: dict[str, Any] | None = None
    ) -> Grant:
        """Phase 1: a single-use token for exactly this operation."""
        return self.run(self.client.authorize(tool, params, context))

    def execute(self, grant: Grant, tool: str, params: dict[str, Any]) -> CallResult:
        """Phase 2: run the operation the grant is for; verify the receipt."""
        return self.run(self.client.execute(grant, tool, params))

    def call(
        self, tool: str, params: dict[str, Any], context: dict[str, Any] | None = None
    ) -> CallResult:
        """Both phases for one operation, waiting for approval if needed."""
        return self.run(self.client.call(tool, params, context))

    def submit(
        self, tool: str, params: dict[str, Any], context: dict[str, Any] | None = None
    ) -> PendingCall:
        """Phase 1 only: a handle to ``wait()`` on."""
        return self.run(self.client.submit(tool, params, context))

    def wait(self, pending: PendingCall, timeout_s: float | None = None) -> CallResult:
        """Wait for approval if needed (``ApprovalPending`` after ``timeout_s``), then execute."""
        return self.run(self.client.wait(pending, timeout_s))

    def wait_for_approval(self, grant: Grant, timeout_s: float | None = None) -> None:
        self.run(self.client.wait_for_approval(grant, timeout_s))

    def status(self, transaction_id: str, wait_s: float | None = None) -> StatusReply:
        """Where a transaction stands (long-polls up to ``wait_s``, max 30)."""
        return self.run(self.client.status(transaction_id, wait_s))

    def approvals(self) -> list[PendingApproval]:
        """Approvers: the transactions waiting for this caller's decision."""
        return self.run(self.client.approvals())

    def decide(self, transaction_id: str, decision: str, reason: str | None = None) -> DecideReply:
        """Approvers: ``approve`` or ``deny`` a pending transaction."""
        return self.run(self.client.decide(transaction_id, decision, reason))

    def call_many(
        self,
        calls: list[tuple[str, dict[str, Any]]],
        *,
        concurrency: int = 16,
        progress: bool = False,
    ) -> list[CallResult | HandshakeError]:
        """Many operations with bounded concurrency; results (or errors) in input order."""
        return self.run(self.client.call_many(calls, concurrency=concurrency, progress=progress))

    def keys(self, refresh: bool = False) -> dict[str, jwt.PyJWK]:
        """The mediator's receipt-signing keys."""
        return self.run(self.client.keys(refresh))

    def verify_receipt(self, receipt: str, result: Any, grant: Grant, tool: str) -> dict[str, Any]:
        """Check a receipt's signature and that it covers this transaction and result."""
        return self.run(self.client.verify_receipt(receipt, result, grant, tool))
