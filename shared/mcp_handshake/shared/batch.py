"""Wire types of the batch handshake (``handshake.v1.authorize.batch`` and
``handshake.v1.execute.batch``), additive to protocol v1.

A batch carries many operations under one session verification. Each
operation's result is exactly the body the single call would have answered:
a grant or an execute reply, or an error body ``{"error": {...}}``. A batch
proof of possession (``handshake-batch-proof+jwt``) binds every
``(transaction id, params hash)`` it covers in one claim, ``ops``.
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec

from mcp_handshake.shared.batchreceipt import ReceiptMode
from mcp_handshake.shared.errors import HandshakeError
from mcp_handshake.shared.wire import (
    AuthorizeRequest,
    Dispatch,
    ErrorDetail,
    ErrorReply,
    ToolName,
    TxnId,
)

__all__ = [
    "BATCH_PROOF_TYP",
    "DEFAULT_MAX_BATCH",
    "DISPATCH_BATCH_TYP",
    "BatchAuthorizeRequest",
    "BatchExecuteOp",
    "BatchExecuteRequest",
    "BatchReply",
    "DispatchBatch",
    "RawResults",
    "error_result",
    "proof_ops",
]

#: ``typ`` of a batch proof of possession.
BATCH_PROOF_TYP = "handshake-batch-proof+jwt"
#: Operations one batch may carry unless configured otherwise (``HANDSHAKE_MAX_BATCH``).
DEFAULT_MAX_BATCH = 256

Token = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]


class BatchAuthorizeRequest(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """``{ops: [{tool, params, context?}, ...]}``: each op as the single authorize body."""

    ops: list[AuthorizeRequest]


class BatchExecuteOp(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """One operation of an execute batch: the single execute body plus its token (which
    the single call sends in the ``Handshake-Transaction-Token`` header)."""

    transaction_id: TxnId
    tool: ToolName
    params: dict[str, Any]
    token: Token


class BatchExecuteRequest(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    ops: list[BatchExecuteOp]
    #: Additive: ``merkle`` asks for one signed Merkle root for the batch and an
    #: inclusion path per operation instead of a receipt each (``shared.batchreceipt``).
    receipts: ReceiptMode = "single"


class BatchReply(msgspec.Struct, frozen=True, omit_defaults=True):
    """One result per operation, in the order of the request's ``ops``."""

    results: list[Any]
    #: Additive: the signed Merkle root, when the request asked for ``merkle`` receipts
    #: and at least one operation ran.
    batch_receipt: str | None = None


def error_result(err: HandshakeError) -> ErrorReply:
    """An operation's error result: the error body the single call would have sent."""
    return ErrorReply(
        ErrorDetail(
            code=err.code,
            message=err.message,
            transaction_id=err.transaction_id,
            retryable=err.retryable,
            retry_after_s=err.retry_after_s,
        )
    )


def proof_ops(pairs: list[tuple[str, str]]) -> list[list[str]]:
    """The ``ops`` claim of a batch proof: ``[transaction id, params hash]`` pairs,
    sorted, without duplicates (the order of the batch does not matter)."""
    return [[txn, ph] for txn, ph in sorted(set(pairs))]


#: ``typ`` of the detached JWS over a batch of dispatches (execute -> executor).
DISPATCH_BATCH_TYP = "handshake-dispatch-batch+jws"


class DispatchBatch(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """Internal: many dispatches in one message, signed once over its exact bytes."""

    items: list[Dispatch]


class RawResults(msgspec.Struct, frozen=True, omit_defaults=True):
    """A batch reply read lazily: each result's JSON bytes as sent."""

    results: list[msgspec.Raw]
    batch_receipt: str | None = None
