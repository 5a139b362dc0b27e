"""Run one signed dispatch against the target API."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from mcp_handshake.services.core.signing import DispatchVerifier
from mcp_handshake.services.core.tools import HttpOperation, ToolRegistry
from mcp_handshake.services.executor.targets import OperationContext, TargetClient
from mcp_handshake.services.runtime.endpoint import Request
from mcp_handshake.services.store import DispatchLog
from mcp_handshake.shared.errors import Forbidden, InternalError
from mcp_handshake.shared.protocol import DISPATCH_HEADER
from mcp_handshake.shared.wire import Dispatch, DispatchReply

__all__ = ["ExecutorDeps", "handle_dispatch"]

log = logging.getLogger(__name__)

#: Clock skew tolerated on a dispatch's ``iat``.
_SKEW_S = 5.0
#: How long a dispatch's run marker outlives the dispatch: covers clock skew between
#: executors, so no executor accepts a replay after the marker is gone.
_MARKER_MARGIN_S = 60.0


@dataclass(frozen=True, slots=True)
class ExecutorDeps:
    verifier: DispatchVerifier
    tools: ToolRegistry
    targets: dict[str, TargetClient]
    #: Shared by all executors: a replayed dispatch runs nowhere (and the target
    #: sees the same Idempotency-Key anyway).
    dispatches: DispatchLog


async def handle_dispatch(req: Request[Dispatch], deps: ExecutorDeps) -> DispatchReply:
    if not deps.verifier.verify(req.header(DISPATCH_HEADER), req.data):
        log.warning("refused a dispatch without a valid signature")
        raise Forbidden("dispatch signature missing or invalid")
    d = req.body
    now = time.time()
    if d.exp < now or d.iat > now + _SKEW_S:
        raise Forbidden("dispatch expired", transaction_id=d.txn)
    tool = deps.tools.find(d.tool)
    target = deps.targets.get(d.target)
    if tool is None or target is None or tool.target != d.target:
        log.error("dispatch for a tool this executor does not run", extra={"txn": d.txn})
        raise InternalError(transaction_id=d.txn)
    # A reconcile run (d.reconcile > 0) settles an unknown outcome: the tool's declared
    # status operation, or the same operation if it is safe to repeat under its key.
    op = tool.reconcile_operation if d.reconcile else tool.operation
    if op is None:
        log.error("reconcile dispatch for a tool that cannot be reconciled", extra={"txn": d.txn})
        raise InternalError(transaction_id=d.txn)
    ttl = max(d.exp - now, 0.0) + _MARKER_MARGIN_S
    if not await deps.dispatches.claim(d.txn, ttl, d.reconcile):
        log.warning("refused a replayed dispatch", extra={"txn": d.txn})
        raise Forbidden("dispatch already run", transaction_id=d.txn)
    if isinstance(op, HttpOperation):
        result: Any = await target.call(op, d.params, d.txn)
    else:
        result = await op(d.params, OperationContext(target, d.txn))
    log.debug("executed %s", d.tool, extra={"txn": d.txn, "tool": d.tool})
    return DispatchReply(txn=d.txn, result=result)
