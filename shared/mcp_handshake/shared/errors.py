"""The one error tree of the handshake protocol.

Every error a client can see is a subclass of :class:`HandshakeError`, and each
class carries its wire ``code``, HTTP-like ``status`` and ``retryable`` flag.
Services raise them; the endpoint wrapper turns them into error replies; the
client turns error replies back into the same classes. The mapping between the
protocol's error table and Python lives here and nowhere else::

    HandshakeError                      (base, never raised itself)
    ├── BadRequest            400 bad_request
    ├── Unauthenticated       401 unauthenticated
    ├── Forbidden             403 forbidden
    ├── ApprovalDenied        403 approval_denied
    ├── UnknownTool           404 unknown_tool
    ├── InvalidTransaction    409 invalid_transaction
    ├── ApprovalPending       409 approval_pending      (retryable)
    ├── PayloadTooLarge       413 payload_too_large
    ├── InvalidParams         422 invalid_params
    ├── ValidationFailed      422 validation_failed
    ├── RateLimited           429 rate_limited          (retryable)
    ├── InternalError         500 internal
    ├── TargetError           502 target_error
    ├── Unavailable           503 unavailable           (retryable)
    └── OutcomeUnknown        504 outcome_unknown

Messages are shown to users: they never hold secrets, tokens, raw params or
internal names.
"""

from __future__ import annotations

from typing import Any, ClassVar

__all__ = [
    "ERRORS_BY_CODE",
    "ApprovalDenied",
    "ApprovalPending",
    "BadRequest",
    "Forbidden",
    "HandshakeError",
    "InternalError",
    "InvalidParams",
    "InvalidTransaction",
    "OutcomeUnknown",
    "PayloadTooLarge",
    "RateLimited",
    "TargetError",
    "Unauthenticated",
    "Unavailable",
    "UnknownTool",
    "ValidationFailed",
    "error_from_wire",
]


class HandshakeError(Exception):
    """Base of every protocol error."""

    code: ClassVar[str] = "internal"
    status: ClassVar[int] = 500
    retryable: ClassVar[bool] = False
    default_message: ClassVar[str] = "internal error"

    def __init__(
        self,
        message: str | None = None,
        *,
        transaction_id: str | None = None,
        retry_after_s: float | None = None,
    ) -> None:
        self.message = message or self.default_message
        self.transaction_id = transaction_id
        self.retry_after_s = retry_after_s
        #: Services only: what was known when this was raised, for the audit trail.
        #: Never sent on the wire.
        self.facts: dict[str, Any] = {}
        super().__init__(self.message)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(code={self.code!r}, message={self.message!r})"


class BadRequest(HandshakeError):
    code, status, default_message = "bad_request", 400, "malformed request"


class Unauthenticated(HandshakeError):
    code, status, default_message = "unauthenticated", 401, "session token missing or invalid"


class Forbidden(HandshakeError):
    code, status, default_message = "forbidden", 403, "policy does not allow this operation"


class ApprovalDenied(HandshakeError):
    code, status, default_message = "approval_denied", 403, "the operation was not approved"


class UnknownTool(HandshakeError):
    code, status, default_message = "unknown_tool", 404, "no such tool"


class InvalidTransaction(HandshakeError):
    # One code for unknown, expired, used and mismatched tokens, so it is no oracle.
    code, status = "invalid_transaction", 409
    default_message = "transaction token unknown, expired, used, or not valid for this operation"


class ApprovalPending(HandshakeError):
    code, status, retryable = "approval_pending", 409, True
    default_message = "the operation is waiting for approval"


class PayloadTooLarge(HandshakeError):
    code, status, default_message = "payload_too_large", 413, "request body too large"


class InvalidParams(HandshakeError):
    code, status, default_message = "invalid_params", 422, "params do not match the tool schema"


class ValidationFailed(HandshakeError):
    code, status, default_message = "validation_failed", 422, "tier validation failed"


class RateLimited(HandshakeError):
    code, status, retryable = "rate_limited", 429, True
    default_message = "rate limit reached"


class InternalError(HandshakeError):
    code, status, default_message = "internal", 500, "internal error"


class TargetError(HandshakeError):
    code, status, default_message = "target_error", 502, "the target API refused or failed"


class Unavailable(HandshakeError):
    code, status, retryable = "unavailable", 503, True
    default_message = "a backing service is unavailable; nothing was executed"


class OutcomeUnknown(HandshakeError):
    code, status = "outcome_unknown", 504
    default_message = (
        "the target did not answer in time; the operation may or may not have happened"
    )


ERRORS_BY_CODE: dict[str, type[HandshakeError]] = {
    cls.code: cls
    for cls in (
        BadRequest,
        Unauthenticated,
        Forbidden,
        ApprovalDenied,
        UnknownTool,
        InvalidTransaction,
        ApprovalPending,
        PayloadTooLarge,
        InvalidParams,
        ValidationFailed,
        RateLimited,
        InternalError,
        TargetError,
        Unavailable,
        OutcomeUnknown,
    )
}


def error_from_wire(
    code: str,
    message: str,
    transaction_id: str | None = None,
    retry_after_s: float | None = None,
) -> HandshakeError:
    """Rebuild the exception for an error reply (unknown codes become ``InternalError``)."""
    cls = ERRORS_BY_CODE.get(code, InternalError)
    return cls(message, transaction_id=transaction_id, retry_after_s=retry_after_s)
