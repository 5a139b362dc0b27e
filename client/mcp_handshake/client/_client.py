"""``HandshakeClient``: both phases of the handshake, receipts verified."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterable, AsyncIterator, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

import jwt
import nats
from nats.aio.client import DEFAULT_MAX_RECONNECT_ATTEMPTS
from nats.aio.client import Client as NATS

from mcp_handshake.shared import protocol, tracing
from mcp_handshake.shared.batch import BatchReply
from mcp_handshake.shared.batchreceipt import ReceiptMode, is_batch_receipt, parse_batch_receipt
from mcp_handshake.shared.errors import (
    ApprovalDenied,
    ApprovalPending,
    HandshakeError,
    InternalError,
    InvalidTransaction,
    OutcomeUnknown,
    Unauthenticated,
    Unavailable,
    ValidationFailed,
)
from mcp_handshake.shared.natsconn import connect_options, identity_refused, inbox_prefix, redact
from mcp_handshake.shared.proofs import ProofKey
from mcp_handshake.shared.protocol import (
    AUTHORIZATION_HEADER,
    PROOF_HEADER,
    RECONCILE_PROOF_PH,
    RECONCILE_PROOF_TOOL,
    TOKEN_HEADER,
)
from mcp_handshake.shared.settings import Settings, default_agent_key, make_private_dirs
from mcp_handshake.shared.subjects import DEFAULT_PREFIX, Subjects
from mcp_handshake.shared.wire import (
    ApprovalsReply,
    DecideReply,
    ExecuteReply,
    Grant,
    Jwks,
    PendingApproval,
    StatusReply,
    ToolInfo,
    ToolsReply,
)

from ._batch import NO_BATCHES, BatchCalls, Batcher
from ._receipts import Receipts
from ._session import EnvSession, SessionProvider, as_provider

__all__ = ["CallResult", "HandshakeClient", "PendingCall"]

R = TypeVar("R")
log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class PendingCall:
    """A submitted operation: authorized, possibly waiting for approval."""

    tool: str
    params: dict[str, Any]
    grant: Grant

    @property
    def transaction_id(self) -> str:
        return self.grant.transaction_id


@dataclass(frozen=True, slots=True)
class CallResult:
    """The outcome of one handshake: the result and its verified receipt."""

    transaction_id: str
    result: Any
    receipt: str
    #: The receipt's verified claims (who, what, when, approvals).
    claims: dict[str, Any]


class HandshakeClient:
    """Talks to the mediator over NATS request-reply.

    ```python
    async with HandshakeClient("nats://127.0.0.1:4222", session=token) as hs:
        res = await hs.call("payments.get_exchange_rate", {"base": "EUR", "quote": "USD"})
    ```
    """

    def __init__(
        self,
        servers: str | list[str] = "nats://127.0.0.1:4222",
        *,
        session: Any = None,
        prefix: str = DEFAULT_PREFIX,
        timeout_s: float = 15.0,
        verify_receipts: bool = True,
        nc: NATS | None = None,
        proof_key: ProofKey | None = None,
        approval_timeout_s: float = 600.0,
        connect_options: dict[str, Any] | None = None,
        batch_receipts: ReceiptMode = "merkle",
    ) -> None:
        """``connect_options`` go to ``nats.connect``: the agent's NATS identity
        (``user``/``password``) and its ``inbox_prefix`` (``_INBOX.<user>``: the only
        inbox the bus lets it read). ``batch_receipts``: what ``call_many`` and
        ``stream()`` ask an execute batch for, ``merkle`` (one signed root per batch,
        each operation's receipt its leaf and inclusion path) or ``single`` (a signed
        receipt per operation); a mediator that answers either way is accepted."""
        self._servers = [servers] if isinstance(servers, str) else servers
        self._connect_options = dict(connect_options or {})
        self._session: SessionProvider = as_provider(session)
        self._subjects = Subjects(prefix)
        self._timeout = timeout_s
        self._verify_receipts = verify_receipts
        self._nc = nc
        self._own_nc = nc is None
        self._keys: dict[str, jwt.PyJWK] = {}
        self._receipts = Receipts(lambda refresh: self.keys(refresh))
        self._batch_receipts = batch_receipts
        self._proof_key = proof_key
        self._approval_timeout = approval_timeout_s

    @classmethod
    def from_env(cls, **overrides: Any) -> HandshakeClient:
        """A client configured the way the CLI is: NATS URL and subject prefix from
        ``HANDSHAKE_*`` variables (or the running ``mcp-handshake up`` stack under
        ``HANDSHAKE_HOME``), the session from ``$HANDSHAKE_SESSION``, and the proof key
        ``$HANDSHAKE_AGENT_KEY`` (default ``$XDG_CONFIG_HOME/mcp-handshake/agent.pem``,
        else ``~/.config/mcp-handshake/agent.pem``; created on first use, 0600 in a 0700
        directory). The key's location never depends on the current directory."""
        settings = Settings.from_env()
        options: dict[str, Any] = {
            "session": EnvSession(),
            "prefix": settings.subject_prefix,
            "connect_options": _nats_identity(settings),
        }
        if "proof_key" not in overrides:
            path = settings.agent_key or default_agent_key({})
            make_private_dirs(path.parent)
            options["proof_key"] = ProofKey.load_or_create(path)
        options.update(overrides)
        return cls(settings.nats_url.split(","), **options)

    async def __aenter__(self) -> HandshakeClient:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def connect(self) -> None:
        """Connect to NATS; ``Unavailable`` (or ``Unauthenticated`` when the bus refuses
        the agent's NATS identity) within seconds when that fails. nats-py alone would
        retry a refused server 60 times inside ``connect`` (minutes) before saying so;
        once connected, its usual reconnects apply (or what ``connect_options`` say)."""
        if self._nc is not None:
            return
        options: dict[str, Any] = {"name": "handshake-client", **self._connect_options}
        options.setdefault("inbox_prefix", inbox_prefix(options.get("user")))
        patient = "max_reconnect_attempts" in options
        options.setdefault("max_reconnect_attempts", 1)
        seen: list[Exception] = []
        theirs = options.get("error_cb")

        async def on_error(exc: Exception) -> None:
            if self._nc is None:  # while connecting: the reason, if it fails
                seen.append(exc)
            elif theirs is None:
                log.warning("NATS error: %s", type(exc).__name__)
            if theirs is not None:
                await theirs(exc)

        options["error_cb"] = on_error
        nc = NATS()
        try:
            await nc.connect(servers=self._servers, **options)
        except (OSError, TimeoutError, nats.errors.Error) as exc:
            where = redact(",".join(self._servers))
            if any(identity_refused(e) for e in (*seen, exc)):
                raise Unauthenticated(f"NATS at {where} refused this agent's identity") from None
            raise Unavailable(f"cannot connect to NATS at {where} ({type(exc).__name__})") from None
        if not patient:
            nc.options["max_reconnect_attempts"] = DEFAULT_MAX_RECONNECT_ATTEMPTS
        self._nc = nc

    async def close(self) -> None:
        if self._nc is not None and self._own_nc:
            await self._nc.drain()
        self._nc = None

    async def _request(
        self,
        subject: str,
        body: Any,
        reply_type: type[R],
        headers: dict[str, str] | None = None,
        *,
        auth: bool = True,
        timeout_error: type[HandshakeError] = Unavailable,
    ) -> R:
        if self._nc is None:
            raise RuntimeError("HandshakeClient is not connected (use 'async with')")
        hdrs = dict(headers or {})
        if auth:
            hdrs[AUTHORIZATION_HEADER] = f"Bearer {await self._session.token()}"
        return await protocol.request(
            self._nc,
            subject,
            body,
            reply_type,
            headers=hdrs,
            timeout=self._timeout,
            timeout_error=timeout_error,
        )

    async def tools(self) -> list[ToolInfo]:
        """The tools this caller may use, with their params JSON Schemas."""
        reply: ToolsReply = await self._request(self._subjects.tools, {}, ToolsReply)
        return reply.tools

    async def authorize(
        self, tool: str, params: dict[str, Any], context: dict[str, Any] | None = None
    ) -> Grant:
        """Phase 1: a single-use token for exactly this operation."""
        body: dict[str, Any] = {"tool": tool, "params": params}
        if context:
            body["context"] = context
        grant: Grant = await self._request(self._subjects.authorize, body, Grant)
        return grant

    async def execute(self, grant: Grant, tool: str, params: dict[str, Any]) -> CallResult:
        """Phase 2: run the operation the grant is for; verify the receipt.

        Tiers above public need a proof of possession, signed here with the
        client's ``proof_key``.
        """
        headers = {TOKEN_HEADER: grant.token}
        if grant.tier != "public":
            if self._proof_key is None:
                raise ValidationFailed(f"{tool} needs a proof key (HandshakeClient(proof_key=...))")
            headers[PROOF_HEADER] = self._proof_key.sign(
                grant.transaction_id, tool, grant.params_hash
            )
        body = {"transaction_id": grant.transaction_id, "tool": tool, "params": params}
        reply: ExecuteReply = await self._request(
            self._subjects.execute, body, ExecuteReply, headers, timeout_error=OutcomeUnknown
        )
        claims = await self.verify_receipt(reply.receipt, reply.result, grant, tool)
        return CallResult(reply.transaction_id, reply.result, reply.receipt, claims)

    async def reconcile(self, transaction_id: str) -> CallResult:
        """Settle one of this caller's transactions left ``outcome_unknown``.

        The mediator runs the operation again under the same Idempotency-Key (when the
        tool declares it safe to repeat) or the tool's status operation, and answers
        like ``execute``, with a receipt (claim ``reconciled``), verified here. Signed
        with the client's ``proof_key`` when it has one (tiers above public need it).
        """
        headers: dict[str, str] = {}
        if self._proof_key is not None:
            headers[PROOF_HEADER] = self._proof_key.sign(
                transaction_id, RECONCILE_PROOF_TOOL, RECONCILE_PROOF_PH
            )
        body = {"transaction_id": transaction_id}
        reply: ExecuteReply = await self._request(
            self._subjects.reconcile, body, ExecuteReply, headers, timeout_error=OutcomeUnknown
        )
        # The caller may hold only the id: the receipt's signature, txn and result hash
        # are checked, and its tool and params hash must agree with the reply's.
        tool = str(jwt.decode(reply.receipt, options={"verify_signature": False}).get("tool"))
        grant = Grant(transaction_id=transaction_id, token="", status="executed",
                      tier=reply.tier or "", params_hash=reply.params_hash or "",
                      expires_at=0.0)  # fmt: skip
        claims = await self.verify_receipt(reply.receipt, reply.result, grant, tool)
        return CallResult(reply.transaction_id, reply.result, reply.receipt, claims)

    async def call(
        self, tool: str, params: dict[str, Any], context: dict[str, Any] | None = None
    ) -> CallResult:
        """Both phases of the handshake for one operation, waiting for approval if needed."""
        with tracing.span(f"handshake {tool}", attributes={"handshake.tool": tool}) as span:
            result = await self.wait(await self.submit(tool, params, context))
            if span is not None:
                span.set_attribute("handshake.transaction_id", result.transaction_id)
            return result

    async def submit(
        self, tool: str, params: dict[str, Any], context: dict[str, Any] | None = None
    ) -> PendingCall:
        """Phase 1 only: a handle to ``wait()`` on (restricted operations wait for approval)."""
        return PendingCall(tool, params, await self.authorize(tool, params, context))

    async def status(self, transaction_id: str, wait_s: float | None = None) -> StatusReply:
        """Where a transaction stands; with ``wait_s`` (max 30), answers as soon as a
        pending approval is decided."""
        body: dict[str, Any] = {"transaction_id": transaction_id}
        if wait_s:
            body["wait_s"] = wait_s
        reply: StatusReply = await self._request(self._subjects.status, body, StatusReply)
        return reply

    async def approvals(self) -> list[PendingApproval]:
        """Approvers: the transactions waiting for this caller's decision."""
        reply: ApprovalsReply = await self._request(
            self._subjects.approvals_list, {}, ApprovalsReply
        )
        return reply.approvals

    async def decide(
        self,
        transaction_id: str,
        decision: str,
        reason: str | None = None,
        *,
        preview_hash: str | None = None,
        sign: bool | None = None,
    ) -> DecideReply:
        """Approvers: ``approve`` or ``deny`` a pending transaction (never one's own).

        A signed decision carries a JWS by the ``proof_key`` over ``{txn, preview_hash,
        decision}`` (the preview this approver saw: given, or read from the pending
        list), and the audit trail keeps it. ``sign`` defaults to signing when the
        session is bound to the proof key (``cnf.jkt``), where the mediator requires
        it; pass ``True`` for a key registered with ``keys register``.
        """
        body: dict[str, Any] = {"transaction_id": transaction_id, "decision": decision}
        if reason:
            body["reason"] = reason
        headers: dict[str, str] = {}
        if sign is None:
            sign = await self._session_bound_to_key()
        if sign:
            if self._proof_key is None:
                raise ValidationFailed("signing a decision needs a proof key")
            if preview_hash is None:
                shown = {a.transaction_id: a for a in await self.approvals()}
                if transaction_id not in shown:
                    raise InvalidTransaction("no pending approval with this id that you may decide")
                preview_hash = shown[transaction_id].preview_hash
            headers[PROOF_HEADER] = self._proof_key.sign_decision(
                transaction_id, preview_hash, decision
            )
        reply: DecideReply = await self._request(
            self._subjects.approvals_decide, body, DecideReply, headers
        )
        return reply

    async def _session_bound_to_key(self) -> bool:
        """Whether this client's session names its proof key in ``cnf.jkt`` (read, not
        verified: the mediator verifies)."""
        if self._proof_key is None:
            return False
        try:
            claims = jwt.decode(await self._session.token(), options={"verify_signature": False})
        except jwt.PyJWTError:
            return False
        cnf = claims.get("cnf")
        return isinstance(cnf, dict) and cnf.get("jkt") == self._proof_key.thumbprint

    async def wait_for_approval(self, grant: Grant, timeout_s: float | None = None) -> None:
        """Return once ``grant`` is approved; ``ApprovalDenied`` if denied or expired,
        ``ApprovalPending`` if still undecided after ``timeout_s``."""
        deadline = time.monotonic() + (timeout_s or self._approval_timeout)
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise ApprovalPending(transaction_id=grant.transaction_id)
            st = await self.status(grant.transaction_id, wait_s=min(left, 25.0))
            if st.status in {"approved", "granted"}:
                return
            if st.status in {"denied", "expired"}:
                raise ApprovalDenied(
                    f"the operation was {st.status}", transaction_id=grant.transaction_id
                )
            if st.status != "pending_approval":
                raise InvalidTransaction(transaction_id=grant.transaction_id)

    async def wait(self, pending: PendingCall, timeout_s: float | None = None) -> CallResult:
        """Wait for approval if needed, then execute."""
        if pending.grant.status == "pending_approval":
            await self.wait_for_approval(pending.grant, timeout_s)
        return await self.execute(pending.grant, pending.tool, pending.params)

    async def as_completed(
        self, pendings: list[PendingCall], timeout_s: float | None = None
    ) -> AsyncIterator[tuple[PendingCall, CallResult | HandshakeError]]:
        """Execute submitted operations as their decisions arrive; yields each with its
        result or its error (denied, expired, failed)."""

        async def one(p: PendingCall) -> tuple[PendingCall, CallResult | HandshakeError]:
            try:
                return p, await self.wait(p, timeout_s)
            except HandshakeError as exc:
                return p, exc

        for next_done in asyncio.as_completed([one(p) for p in pendings]):
            yield await next_done

    async def stream(
        self,
        calls: Iterable[Call] | AsyncIterable[Call],
        *,
        concurrency: int = 16,
        progress: bool = False,
    ) -> AsyncIterator[tuple[int, CallResult | HandshakeError]]:
        """Run ``(tool, params)`` calls from a sync or async iterable, consumed lazily, at
        most ``concurrency`` at a time; yield ``(index, result or error)`` as each
        completes. Memory stays flat however many calls there are: only the calls in
        flight are held. Leaving the loop early cancels the calls still running. The
        calls in flight go to the mediator in batches (``authorize.batch`` and
        ``execute.batch``) of at most ``concurrency``; each keeps its own outcome.

        ```python
        async for i, outcome in hs.stream(read_invoices(), concurrency=32):
            ...
        ```
        """
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        source = _as_async_iterator(calls)
        batcher = self._batcher(concurrency)
        running: set[asyncio.Task[tuple[int, CallResult | HandshakeError]]] = set()
        bar = _Progress(None) if progress else None
        index, exhausted = 0, False
        try:
            while True:
                while not exhausted and len(running) < concurrency:
                    try:
                        tool, params = await anext(source)
                    except StopAsyncIteration:
                        exhausted = True
                        break
                    running.add(asyncio.create_task(self._outcome(index, tool, params, batcher)))
                    index += 1
                if not running:
                    return
                done, running = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    if bar is not None:
                        bar.advance()
                    yield task.result()
        finally:
            for task in running:
                task.cancel()
            if bar is not None:
                bar.close()

    async def _outcome(
        self, index: int, tool: str, params: dict[str, Any], batcher: Batcher[CallResult]
    ) -> tuple[int, CallResult | HandshakeError]:
        try:
            return index, await batcher.call(tool, params)
        except HandshakeError as exc:
            return index, exc

    async def call_many(
        self,
        calls: list[tuple[str, dict[str, Any]]],
        *,
        concurrency: int = 16,
        progress: bool = False,
    ) -> list[CallResult | HandshakeError]:
        """Run many operations with bounded concurrency; results in input order, errors
        returned in place rather than raised. ``progress`` shows a progress bar. For large or
        unbounded batches use :meth:`stream`, whose memory stays flat. The calls in flight
        go to the mediator in batches of at most ``concurrency``, each with its own outcome."""
        slots = asyncio.Semaphore(concurrency)
        batcher = self._batcher(concurrency)
        results: list[CallResult | HandshakeError] = [InternalError()] * len(calls)
        bar = _Progress(len(calls)) if progress else None

        async def one(i: int, tool: str, params: dict[str, Any]) -> None:
            async with slots:
                try:
                    results[i] = await batcher.call(tool, params)
                except HandshakeError as exc:
                    results[i] = exc
                if bar is not None:
                    bar.advance()

        try:
            await asyncio.gather(*(one(i, t, p) for i, (t, p) in enumerate(calls)))
        finally:
            if bar is not None:
                bar.close()
        return results

    def _batcher(self, window: int) -> Batcher[CallResult]:
        """Batches of at most ``window`` of the calls in flight (``_batch``)."""

        async def request(
            subject: str, body: Any, headers: dict[str, str], timeout_error: type[HandshakeError]
        ) -> BatchReply:
            if self._nc is None:
                raise RuntimeError("HandshakeClient is not connected (use 'async with')")
            hdrs = {**headers, AUTHORIZATION_HEADER: f"Bearer {await self._session.token()}"}
            reply: BatchReply = await protocol.request(
                self._nc, subject, body, BatchReply, headers=hdrs, timeout=self._timeout,
                timeout_error=timeout_error, no_responders=NO_BATCHES,
            )  # fmt: skip
            return reply

        async def result(reply: ExecuteReply, grant: Grant, tool: str) -> CallResult:
            claims = await self.verify_receipt(reply.receipt, reply.result, grant, tool)
            return CallResult(reply.transaction_id, reply.result, reply.receipt, claims)

        async def wait(tool: str, params: dict[str, Any], grant: Grant) -> CallResult:
            return await self.wait(PendingCall(tool, params, grant))

        def single_receipts() -> None:
            self._batch_receipts = "single"

        calls = BatchCalls(self._subjects, self._proof_key, request, self.call, wait, result,
                           merkle=self._batch_receipts == "merkle",
                           merkle_refused=single_receipts)  # fmt: skip
        return Batcher(calls, window)

    async def keys(self, refresh: bool = False) -> dict[str, jwt.PyJWK]:
        """The mediator's receipt-signing keys (JWKS from ``handshake.v1.keys``)."""
        if refresh or not self._keys:
            jwks: Jwks = await self._request(self._subjects.keys, {}, Jwks, auth=False)
            self._keys = {k["kid"]: jwt.PyJWK(k) for k in jwks.keys if "kid" in k}
        return self._keys

    async def verify_receipt(
        self, receipt: str, result: Any, grant: Grant, tool: str
    ) -> dict[str, Any]:
        """Check the receipt's signature and that it covers this transaction and result:
        a single receipt (a JWS), or an operation's Merkle batch receipt (its batch's
        signed root, leaf and inclusion path; ``_receipts``)."""
        if not self._verify_receipts:
            if is_batch_receipt(receipt):
                return dict(parse_batch_receipt(receipt).leaf)
            return dict(jwt.decode(receipt, options={"verify_signature": False}))
        expected = {"txn": grant.transaction_id, "tool": tool, "ph": grant.params_hash}
        return await self._receipts.verify(receipt, expected, result)


def _nats_identity(settings: Settings) -> dict[str, Any]:
    options = connect_options(settings, "handshake-client")
    del options["servers"]
    return options


#: One operation: the tool's name and its params.
Call = tuple[str, dict[str, Any]]


async def _as_async_iterator(calls: Iterable[Call] | AsyncIterable[Call]) -> AsyncIterator[Call]:
    if isinstance(calls, AsyncIterable):
        async for call in calls:
            yield call
    else:
        for call in calls:
            yield call


class _Progress:
    """A rich progress bar, imported only when asked for."""

    def __init__(self, total: int | None) -> None:
        from rich.progress import Progress

        self._progress = Progress(transient=True)
        self._progress.start()
        self._task = self._progress.add_task("handshakes", total=total)

    def advance(self) -> None:
        self._progress.advance(self._task)

    def close(self) -> None:
        self._progress.stop()
