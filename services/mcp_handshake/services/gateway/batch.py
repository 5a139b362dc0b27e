"""The batch routes: ``POST /v1/authorize/batch`` and ``POST /v1/execute/batch``.

Each is the NATS batch subject of the same name (protocol.md, "Batch"): the body
``{ops: [...]}`` goes to the workers byte for byte, and the reply ``{results:
[...]}`` comes back with each result's bytes as the worker sent them (a grant or an
execute reply, or that operation's error body). A batch that ran is ``200`` whatever
its operations' outcomes; an error of the whole request (``bad_request``,
``unauthenticated``, ``payload_too_large``, ``rate_limited``, ...) has its error
table's status, as on the single routes, and then nothing was done.

Proof of possession at ``execute/batch`` (docs/decisions.md, "The gateway's batch
routes"): a batch proof in ``Handshake-Proof`` (the NATS batch proof, forwarded as
it is), or a DPoP proof of this request (``htu`` the public URL and
``/v1/execute/batch``), checked and vouched for as at ``/v1/execute``; never both.
"""

from __future__ import annotations

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from mcp_handshake.services.core.dpop import DPOP_HEADER
from mcp_handshake.services.gateway.dpop import nonce_header, vouch
from mcp_handshake.services.gateway.errors import JSON, error_response
from mcp_handshake.services.gateway.forward import Gateway, nats_headers, read_body
from mcp_handshake.shared.batch import RawResults
from mcp_handshake.shared.errors import HandshakeError, OutcomeUnknown
from mcp_handshake.shared.protocol import PROOF_HEADER

__all__ = ["authorize_batch", "execute_batch"]


def _results(reply: RawResults, headers: dict[str, str] | None = None) -> Response:
    return Response(msgspec.json.encode(reply), media_type=JSON, headers=headers)


async def authorize_batch(request: Request) -> Response:
    """Many authorizations: every result as ``POST /v1/authorize`` would answer it (a
    grant still pending approval is a result like any other: the response is ``200``)."""
    gw: Gateway = request.app.state.gateway
    data = await read_body(request, gw.options.max_body, gw.options.body_timeout_s)
    reply = await gw.forward(gw.subjects.authorize_batch, data, RawResults, nats_headers(request))
    return _results(reply)


async def execute_batch(request: Request) -> Response:
    """Many executions, each with its token in the body. No answer in time is
    ``outcome_unknown`` for the whole request: any of its operations may have run."""
    gw: Gateway = request.app.state.gateway
    data = await read_body(request, gw.options.max_body, gw.options.body_timeout_s)
    headers = nats_headers(request, PROOF_HEADER, DPOP_HEADER)
    extra = nonce_header(gw.options)
    try:
        vouch(request, headers, gw.options)
        reply = await gw.forward(
            gw.subjects.execute_batch, data, RawResults, headers, timeout_error=OutcomeUnknown
        )
    except HandshakeError as exc:
        return error_response(exc, extra)
    return _results(reply, extra)
