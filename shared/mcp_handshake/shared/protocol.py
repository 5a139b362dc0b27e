"""Protocol v1 on the wire: header names, ``typ`` values, error replies, one request call.

Everything that reads or writes these on NATS uses this module: the client,
the endpoint wrapper and the execute worker's dispatch. An error reply is a
JSON ``{"error": {...}}`` body with headers ``Nats-Service-Error: <code>`` and
``Nats-Service-Error-Code: <status>``; a success reply has neither.
"""

from __future__ import annotations

from typing import Any, TypeVar

import msgspec
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout

from . import tracing
from .errors import HandshakeError, Unavailable, error_from_wire
from .wire import ErrorDetail, ErrorReply

__all__ = [
    "APPROVAL_TYP",
    "AUTHORIZATION_HEADER",
    "DECISION_TYP",
    "DISPATCH_HEADER",
    "DISPATCH_TYP",
    "ERROR_CODE_HEADER",
    "ERROR_HEADER",
    "INTERNAL_HEADER",
    "PROOF_ALGORITHMS",
    "PROOF_HEADER",
    "PROOF_TYP",
    "RECEIPT_TYP",
    "RECONCILE_PROOF_PH",
    "RECONCILE_PROOF_TOOL",
    "TOKEN_HEADER",
    "decode_error",
    "encode_error",
    "request",
]

# Headers an agent sends.
AUTHORIZATION_HEADER = "Authorization"
TOKEN_HEADER = "Handshake-Transaction-Token"  # noqa: S105 - a header name
PROOF_HEADER = "Handshake-Proof"
# Headers of error replies (the NATS micro convention).
ERROR_HEADER = "Nats-Service-Error"
ERROR_CODE_HEADER = "Nats-Service-Error-Code"
# Internal headers (services only): detached JWS over the exact body bytes.
DISPATCH_HEADER = "Handshake-Dispatch-Signature"
INTERNAL_HEADER = "Handshake-Internal-Signature"

# JOSE ``typ`` values.
PROOF_TYP = "handshake-proof+jwt"
#: An approver's signed decision, sent in ``Handshake-Proof`` on ``approvals.decide``.
DECISION_TYP = "handshake-decision+jwt"
#: A reconcile's proof: a ``PROOF_TYP`` JWS whose ``tool`` and ``ph`` claims are these
#: (with ``txn``, ``iat`` and a fresh ``jti``). The caller may know only the transaction
#: id; ``ph`` is no params hash, so no execute proof can pass for one, nor the reverse.
RECONCILE_PROOF_TOOL = "handshake.reconcile"
RECONCILE_PROOF_PH = "reconcile"
RECEIPT_TYP = "handshake-receipt+jwt"
DISPATCH_TYP = "handshake-dispatch+jws"
APPROVAL_TYP = "handshake-approval-request+jws"
#: Algorithms a proof of possession may use.
PROOF_ALGORITHMS = ("EdDSA", "ES256")

R = TypeVar("R")

_encode = msgspec.json.encode
_error_reply = msgspec.json.Decoder(ErrorReply)
_decoders: dict[Any, msgspec.json.Decoder[Any]] = {}


def encode_error(err: HandshakeError) -> tuple[bytes, dict[str, str]]:
    """The body and headers of the error reply for ``err``."""
    body = ErrorReply(
        ErrorDetail(
            code=err.code,
            message=err.message,
            transaction_id=err.transaction_id,
            retryable=err.retryable,
            retry_after_s=err.retry_after_s,
        )
    )
    return _encode(body), {ERROR_CODE_HEADER: str(err.status), ERROR_HEADER: err.code}


def decode_error(msg: Msg) -> ErrorDetail | None:
    """The error a reply carries, or ``None`` for a success reply.

    An error reply whose body is unreadable reads as ``internal``.
    """
    if not msg.headers or ERROR_HEADER not in msg.headers:
        return None
    try:
        return _error_reply.decode(msg.data).error
    except msgspec.DecodeError:
        return ErrorDetail(code="internal", message="unreadable error reply")


def _decoder(reply_type: type[R]) -> msgspec.json.Decoder[R]:
    dec = _decoders.get(reply_type)
    if dec is None:
        dec = _decoders[reply_type] = msgspec.json.Decoder(reply_type)
    return dec


async def request(
    nc: NATS,
    subject: str,
    body: Any,
    reply_type: type[R],
    *,
    headers: dict[str, str] | None = None,
    timeout: float,
    timeout_error: type[HandshakeError] = Unavailable,
    no_responders: str = "no mediator worker is serving this request",
    no_answer: str = "the mediator did not answer in time",
    span_attributes: dict[str, Any] | None = None,
) -> R:
    """One request-reply exchange, typed: the decoded reply, or the protocol error raised.

    ``body`` is a Struct, a dict or already-encoded bytes. No responders is
    ``Unavailable(no_responders)``; no answer in time is ``timeout_error(no_answer)``.
    """
    data = body if isinstance(body, bytes) else _encode(body)
    try:
        with tracing.send_span(subject, **(span_attributes or {})):
            msg = await nc.request(
                subject, data, timeout=timeout, headers=tracing.inject(dict(headers or {}))
            )
    except NoRespondersError:
        raise Unavailable(no_responders) from None
    except NatsTimeout:
        raise timeout_error(no_answer) from None
    detail = decode_error(msg)
    if detail is not None:
        raise error_from_wire(
            detail.code, detail.message, detail.transaction_id, detail.retry_after_s
        )
    return _decoder(reply_type).decode(msg.data)
