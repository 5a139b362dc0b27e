"""What every framework adapter shares: host-safe names, one call, the result's shape.

**Names.** Function-calling APIs (OpenAI, Anthropic, Gemini) accept only
``[A-Za-z0-9_-]{1,64}``; tool names have dots. ``host_name`` writes each ``.`` as
``__`` (``payments.create_invoice`` -> ``payments__create_invoice``) and
``tool_name`` reverses it. A name that already holds ``__`` could not be mapped
back, so it is refused rather than guessed.

**Results.** A tool returns a JSON object the model can read:

- done: ``{"status": "ok", "result": ..., "transaction_id": ..., "receipt": ...}``
  (the receipt was verified by the client before this is returned);
- restricted and still undecided after the bounded wait:
  ``{"status": "pending_approval", "transaction_id": ..., "message": ...}``;
  the agent follows up with the extra tool ``handshake_wait`` (``{"transaction_id"}``),
  which waits again with the same bound and runs the operation once approved;
- refused: ``{"status": "error", "code": ..., "message": ..., "transaction_id": ...}``,
  one of the protocol's error codes. The model sees why; nothing is raised into
  the framework's loop.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from mcp_handshake.shared.errors import ApprovalPending, HandshakeError
from mcp_handshake.shared.wire import ToolInfo

from .._client import HandshakeClient, PendingCall
from .._sync import SyncHandshakeClient

__all__ = [
    "DEFAULT_APPROVAL_WAIT_S",
    "WAIT_TOOL",
    "AnyClient",
    "MediatedTool",
    "catalog",
    "host_name",
    "tool_name",
]

#: How long a restricted tool waits for a decision before answering "pending".
DEFAULT_APPROVAL_WAIT_S = 30.0

AnyClient = HandshakeClient | SyncHandshakeClient

#: The follow-up tool every adapter adds: wait again for a pending transaction.
WAIT_TOOL = ToolInfo(
    name="handshake_wait",
    description="Wait again for an operation that answered pending_approval; runs it "
    "once approved and returns its result, or pending_approval again.",
    tier="public",
    params_schema={
        "type": "object",
        "properties": {"transaction_id": {"type": "string"}},
        "required": ["transaction_id"],
        "additionalProperties": False,
    },
)

_HOST_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def host_name(tool: str) -> str:
    """``payments.create_invoice`` -> ``payments__create_invoice`` (reversible)."""
    if "__" in tool:
        raise ValueError(f"tool name {tool!r} holds '__' and cannot be mapped reversibly")
    name = tool.replace(".", "__")
    if not _HOST_NAME.match(name):
        raise ValueError(f"tool name {tool!r} is not a valid function name once mapped")
    return name


def tool_name(host: str) -> str:
    """The inverse of ``host_name``."""
    return host.replace("__", ".")


def catalog(client: AnyClient, tools: list[ToolInfo] | None = None) -> list[ToolInfo]:
    """The tools to expose: ``tools`` as given, or fetched now from a sync client (an
    async client's catalog must be passed in: ``tools=await hs.tools()``)."""
    if tools is not None:
        return tools
    if isinstance(client, SyncHandshakeClient):
        return client.tools()
    raise TypeError("with an async HandshakeClient pass the catalog: tools=await hs.tools()")


@dataclass(frozen=True)
class MediatedTool:
    """One mediated tool, callable from sync or async framework code.

    Every call is a full handshake through ``client`` (``submit`` then ``wait``);
    nothing of the handshake is done here.
    """

    client: AnyClient
    info: ToolInfo
    approval_wait_s: float = DEFAULT_APPROVAL_WAIT_S
    #: Calls that answered pending, by transaction id; shared by one adapter's tools.
    pending: dict[str, PendingCall] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return host_name(self.info.name)

    @property
    def description(self) -> str:
        tier = f" [tier: {self.info.tier}"
        if self.info.tier == "restricted":
            tier += "; needs approval, may answer pending_approval with a transaction_id"
        return self.info.description + tier + "]"

    @property
    def schema(self) -> dict[str, Any]:
        return self.info.params_schema

    async def ainvoke(self, params: dict[str, Any]) -> dict[str, Any]:
        """Run the operation from async code (any event loop)."""
        client = self.client
        if isinstance(client, SyncHandshakeClient):
            return await client.arun(self._run(client.client, params))
        return await self._run(client, params)

    def invoke(self, params: dict[str, Any]) -> dict[str, Any]:
        """Run the operation from sync code (needs a ``SyncHandshakeClient``)."""
        client = self.client
        if not isinstance(client, SyncHandshakeClient):
            raise TypeError("synchronous tool calls need a SyncHandshakeClient")
        return client.run(self._run(client.client, params))

    async def _run(self, client: HandshakeClient, params: dict[str, Any]) -> dict[str, Any]:
        tool = self.info.name
        pending: PendingCall | None = None
        try:
            if tool == WAIT_TOOL.name:
                txn = str(params.get("transaction_id", ""))
                pending = self.pending.get(txn)
                if pending is None:
                    return _error("invalid_transaction", "no pending call with this id", txn)
            else:
                pending = await client.submit(tool, params)
            res = await client.wait(pending, timeout_s=self.approval_wait_s)
        except ApprovalPending:
            assert pending is not None  # only wait() raises it
            self.pending[pending.transaction_id] = pending
            return {
                "status": "pending_approval",
                "transaction_id": pending.transaction_id,
                "message": f"{pending.tool} is waiting for approval; "
                f"call {WAIT_TOOL.name} with this transaction_id to follow up",
            }
        except HandshakeError as exc:
            if pending is not None:
                self.pending.pop(pending.transaction_id, None)
            return _error(exc.code, exc.message, exc.transaction_id)
        self.pending.pop(res.transaction_id, None)
        return {
            "status": "ok",
            "result": res.result,
            "transaction_id": res.transaction_id,
            "receipt": res.receipt,
        }


def mediated(
    client: AnyClient, tools: list[ToolInfo] | None, approval_wait_s: float
) -> list[MediatedTool]:
    """The catalog as ``MediatedTool``s, plus ``handshake_wait``: always, since policy may
    escalate any tool to approval for some params (an invoice above a threshold)."""
    if not approval_wait_s > 0:
        raise ValueError("approval_wait_s must be a positive number of seconds")
    infos = [*catalog(client, tools), WAIT_TOOL]
    pending: dict[str, PendingCall] = {}
    return [MediatedTool(client, info, approval_wait_s, pending) for info in infos]


def _error(code: str, message: str, transaction_id: str | None) -> dict[str, Any]:
    return {"status": "error", "code": code, "message": message, "transaction_id": transaction_id}
