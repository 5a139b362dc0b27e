"""Wire messages of protocol v1 as msgspec Structs.

Requests are decoded with ``forbid_unknown_fields=True`` so a field the
protocol does not know is a ``bad_request``, never silently ignored. Replies
are encoded with the same structs, so what goes out is exactly the contract.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec

__all__ = [
    "ApprovalRequest",
    "ApprovalsReply",
    "AuthorizeContext",
    "AuthorizeRequest",
    "DecideReply",
    "DecideRequest",
    "Dispatch",
    "DispatchReply",
    "EmptyRequest",
    "ErrorDetail",
    "ErrorReply",
    "ExecuteReply",
    "ExecuteRequest",
    "Grant",
    "Jwks",
    "PendingApproval",
    "ReconcileRequest",
    "StatusReply",
    "StatusRequest",
    "Tier",
    "ToolInfo",
    "ToolsReply",
]

Tier = Literal["public", "internal", "confidential", "restricted"]
TxStatus = Literal[
    "granted",
    "pending_approval",
    "approved",
    "denied",
    "expired",
    "executing",
    "succeeded",
    "failed",
    "outcome_unknown",
]

ShortText = Annotated[str, msgspec.Meta(max_length=200)]
ToolName = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
TxnId = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]


class _Request(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    pass


class AuthorizeContext(_Request, frozen=True):
    """Why the agent asks; recorded as given, never trusted for policy."""

    agent: ShortText | None = None
    reason: Annotated[str, msgspec.Meta(max_length=1000)] | None = None


class AuthorizeRequest(_Request, frozen=True):
    tool: ToolName
    params: dict[str, Any]
    context: AuthorizeContext | None = None


class ExecuteRequest(_Request, frozen=True):
    transaction_id: TxnId
    tool: ToolName
    params: dict[str, Any]


class ReconcileRequest(_Request, frozen=True):
    """Body of ``reconcile``: settle a transaction left ``outcome_unknown``."""

    transaction_id: TxnId


class EmptyRequest(_Request, frozen=True):
    """Body of ``tools`` and ``keys``: an empty object."""


class StatusRequest(_Request, frozen=True):
    transaction_id: TxnId
    wait_s: Annotated[float, msgspec.Meta(ge=0)] | None = None


class DecideRequest(_Request, frozen=True):
    transaction_id: TxnId
    decision: Literal["approve", "deny"]
    reason: Annotated[str, msgspec.Meta(max_length=500)] | None = None


class Grant(msgspec.Struct, frozen=True, omit_defaults=True):
    transaction_id: str
    token: str
    status: str
    tier: str
    params_hash: str
    expires_at: float
    #: Additive: why policy sent this operation to approval, when it did.
    escalated: str | None = None


class ExecuteReply(msgspec.Struct, frozen=True, omit_defaults=True):
    transaction_id: str
    result: Any
    receipt: str
    # Additive: what the receipt covers, readable without decoding it.
    tier: str | None = None
    params_hash: str | None = None
    result_hash: str | None = None


class ToolInfo(msgspec.Struct, frozen=True, omit_defaults=True):
    name: str
    description: str
    tier: str
    params_schema: dict[str, Any]
    #: Additive, present when the operation says: it only reads (an HTTP GET or HEAD),
    #: and repeating it has the effect of one call (GET, HEAD, PUT, DELETE, or a target
    #: that de-duplicates it by its Idempotency-Key).
    read_only: bool | None = None
    idempotent: bool | None = None


class ToolsReply(msgspec.Struct, frozen=True):
    tools: list[ToolInfo]


class StatusReply(msgspec.Struct, frozen=True, omit_defaults=True):
    transaction_id: str
    status: str
    expires_at: float
    decided_by: str | None = None


class PendingApproval(msgspec.Struct, frozen=True):
    """A transaction an approver may decide, as ``approvals.list`` shows it."""

    transaction_id: str
    sub: str
    tool: str
    tier: str
    #: The params with sensitive parts masked; its hash is recorded with decisions.
    preview: Any
    preview_hash: str
    requested_at: float
    expires_at: float
    approvals: int
    quorum: int
    escalated: str | None = None
    #: Requester-supplied, never checked: show them as the requester's words.
    agent: str | None = None
    reason: str | None = None
    #: Additive: the fields above that the requester wrote (untrusted).
    untrusted: list[str] = msgspec.field(default_factory=list)


class ApprovalsReply(msgspec.Struct, frozen=True):
    approvals: list[PendingApproval]


class DecideReply(msgspec.Struct, frozen=True, omit_defaults=True):
    transaction_id: str
    status: str
    approvals: int
    quorum: int
    # Additive: what the decision was about, as the approver saw it.
    tool: str | None = None
    requester: str | None = None
    tier: str | None = None
    preview_hash: str | None = None


class ApprovalRequest(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """Internal: what authorize queues for approval workers (details stay in Redis)."""

    txn: str
    requested_at: float


class Jwks(msgspec.Struct, frozen=True):
    keys: list[dict[str, Any]]


class ErrorDetail(msgspec.Struct, frozen=True):
    code: str
    message: str
    transaction_id: str | None = None
    retryable: bool = False
    # Additive extension: seconds to wait before retrying (rate_limited, approval_pending).
    retry_after_s: float | None = None


class ErrorReply(msgspec.Struct, frozen=True):
    error: ErrorDetail


# Internal messages (handshake.internal.>): services only.


class Dispatch(msgspec.Struct, forbid_unknown_fields=True, frozen=True, omit_defaults=True):
    """What an execute worker asks an executor to run; signed (see ``dispatch``)."""

    txn: str
    sub: str
    tool: str
    target: str
    params: dict[str, Any]
    ph: str
    iat: float
    exp: float
    #: Additive: 0 for the transaction's own run; n > 0 for its n-th reconcile run (the
    #: same operation under the same Idempotency-Key, or its declared status operation).
    reconcile: int = 0


class DispatchReply(msgspec.Struct, frozen=True):
    """An executor's success reply; failures come back as ``ErrorReply``."""

    txn: str
    result: Any
