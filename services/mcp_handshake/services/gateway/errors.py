"""Protocol errors as HTTP responses: the status is the error table's, the body the
protocol's error body. The mapping is the one in ``shared.errors`` (each error class
carries its status); the gateway adds only the errors of HTTP itself."""

from __future__ import annotations

import math

from mcp_handshake.services.gateway.stats import ErrorResponse
from mcp_handshake.shared.errors import HandshakeError
from mcp_handshake.shared.protocol import PROOF_ALGORITHMS, encode_error

__all__ = ["MethodNotAllowed", "NotFound", "RequestTimeout", "UseDpopNonce", "error_response"]

JSON = "application/json"
#: What a 401 challenges for: a session, with or without a DPoP-bound key.
CHALLENGE = f'Bearer, DPoP algs="{" ".join(PROOF_ALGORITHMS)}"'


class NotFound(HandshakeError):
    """No such HTTP route (gateway only)."""

    code, status, default_message = "not_found", 404, "no such endpoint"


class MethodNotAllowed(HandshakeError):
    """The route exists, not with this method (gateway only)."""

    code, status, default_message = "method_not_allowed", 405, "method not allowed"


class RequestTimeout(HandshakeError):
    """The request body did not arrive in time (gateway only)."""

    code, status, default_message = "request_timeout", 408, "request body not received in time"


class UseDpopNonce(HandshakeError):
    """RFC 9449 section 8: the DPoP proof must carry the nonce in ``DPoP-Nonce``.
    Retryable at once (no ``Retry-After``): the token was not used."""

    code, status, retryable = "use_dpop_nonce", 401, True
    default_message = "the DPoP proof must carry the server's nonce (DPoP-Nonce header)"


def error_response(err: HandshakeError, headers: dict[str, str] | None = None) -> ErrorResponse:
    """The HTTP response for a protocol error: its status, the protocol's error body,
    ``Retry-After`` (whole seconds; 1 when a retryable error says no more), and a
    challenge on 401."""
    body, _ = encode_error(err)
    out = dict(headers or {})
    if (err.retryable or err.retry_after_s is not None) and not isinstance(err, UseDpopNonce):
        out["Retry-After"] = str(max(1, math.ceil(err.retry_after_s or 1)))
    if isinstance(err, UseDpopNonce):
        out["WWW-Authenticate"] = 'DPoP error="use_dpop_nonce"'
    elif err.status == 401:
        out["WWW-Authenticate"] = CHALLENGE
    response = ErrorResponse(body, status_code=err.status, media_type=JSON, headers=out)
    response.code = err.code
    return response
