"""``/mcp`` as an OAuth 2.1 protected resource: who may reach it and as whom.

Every request to ``/mcp`` passes this guard before the MCP SDK sees it:

1. ``Host`` must be one this gateway answers to (else ``421``) and ``Origin``, when
   present, one it allows (else ``403``): DNS rebinding and cross-site requests stop
   here.
2. ``Authorization: Bearer <session>`` (or ``DPoP <session>``): the user's own session
   JWT, verified by the workers' own :class:`SessionVerifier` (issuer, key set,
   algorithm allow-list, audience: ``[session] audience`` or one of ``[session]
   resources``). Missing, expired, forged or for another audience: ``401`` with
   ``WWW-Authenticate: Bearer resource_metadata="..."`` (RFC 9728 section 5.1).
3. Required scopes (``required_scopes``, none by default): a session without one is
   ``403`` ``insufficient_scope`` naming it.
4. With DPoP server nonces on, a ``DPoP`` proof without a live nonce is ``401``
   ``use_dpop_nonce`` with a fresh ``DPoP-Nonce`` (nothing ran).
5. The body is read here, under the gateway's size limit and body deadline (``413``,
   ``408``), as ``/v1/*`` reads it: a body trickled in cannot hold a connection open.
   A body that is not one JSON-RPC message is ``400`` here, quoting nothing of it (the
   SDK's own refusal quotes the body, arguments and all).

The verified caller rides in the ASGI scope (:data:`CALLER_KEY`) to the tool handlers,
which send the session (and the request's DPoP proof) on to the workers. Nothing of a
request is logged.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
from mcp.server.auth.provider import AccessToken
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from mcp_handshake.client.mcp_server._http_guard import not_one_message, replay
from mcp_handshake.services.core.dpop import DPOP_HEADER, GatewayKey, bearer_token
from mcp_handshake.services.core.policy import Caller
from mcp_handshake.services.core.proofs import ProofVerifier
from mcp_handshake.services.core.sessions import SessionVerifier
from mcp_handshake.services.gateway.dpop import check_proof
from mcp_handshake.services.gateway.errors import UseDpopNonce, error_response
from mcp_handshake.services.gateway.forward import read_body
from mcp_handshake.services.gateway.nonce import NonceIssuer
from mcp_handshake.shared.errors import HandshakeError, Unauthenticated, ValidationFailed
from mcp_handshake.shared.protocol import PROOF_ALGORITHMS

__all__ = ["CALLER_KEY", "McpCaller", "McpGuard", "McpResource", "metadata_document"]

#: Where the guard leaves the verified :class:`McpCaller` in the ASGI scope.
CALLER_KEY = "mcp_handshake.caller"
_WELL_KNOWN = "/.well-known/oauth-protected-resource"
_LOOPBACK = ("127.0.0.1", "localhost", "[::1]")
_MAX_AUTH = 16384


@dataclass(frozen=True, slots=True)
class McpResource:
    """This gateway's ``/mcp`` as a protected resource."""

    #: The URL hosts use (``https://gw.example/mcp``): the RFC 9728 ``resource``.
    url: str
    #: The session issuer: the authorization server hosts get tokens from.
    issuer: str
    #: ``Host`` values accepted (``host:port``; ``host:*`` for any port).
    hosts: tuple[str, ...]
    #: ``Origin`` values accepted when a request carries one.
    origins: tuple[str, ...]
    #: Scopes a session must carry to use ``/mcp`` (none by default).
    required_scopes: tuple[str, ...] = ()

    @classmethod
    def at(
        cls, base_url: str, issuer: str, origins: tuple[str, ...] = (), scopes: tuple[str, ...] = ()
    ) -> McpResource:
        """The resource at ``base_url + /mcp``; a loopback base also answers to the
        other loopback names on any port (a local host's own spelling)."""
        parts = urlsplit(base_url.rstrip("/"))
        hosts, allowed = [parts.netloc.lower()], [f"{parts.scheme}://{parts.netloc}".lower()]
        if (parts.hostname or "") in ("127.0.0.1", "localhost", "::1"):
            hosts += [f"{h}:*" for h in _LOOPBACK]
            allowed += [f"http://{h}:*" for h in _LOOPBACK]
        url = f"{base_url.rstrip('/')}/mcp"
        return cls(url, issuer, tuple(hosts), (*allowed, *origins), scopes)

    @property
    def metadata_url(self) -> str:
        """RFC 9728 section 3.1: the well-known path inserted before the resource path."""
        parts = urlsplit(self.url)
        return f"{parts.scheme}://{parts.netloc}{_WELL_KNOWN}{parts.path}"


def metadata_document(resource: McpResource) -> bytes:
    """RFC 9728 protected-resource metadata for ``/mcp``."""
    doc: dict[str, object] = {
        "resource": resource.url,
        "authorization_servers": [resource.issuer],
        "bearer_methods_supported": ["header"],
        "resource_name": "mcp-handshake",
        "dpop_signing_alg_values_supported": list(PROOF_ALGORITHMS),
    }
    if resource.required_scopes:
        doc["scopes_supported"] = list(resource.required_scopes)
    return json.dumps(doc).encode()


@dataclass(frozen=True, slots=True)
class McpCaller:
    """The verified user behind one ``/mcp`` request."""

    caller: Caller
    #: The session JWT itself, sent on to the workers as ``Bearer``.
    session: str
    #: The request's DPoP proof (RFC 9449), when it carries one.
    dpop: str | None
    #: The URI a DPoP proof on this request must name in ``htu``.
    htu: str

    @property
    def sub(self) -> str:
        return self.caller.sub


class _NoKeys:
    """No registry: only DPoP-bound sessions are checked here, and they name their key."""

    async def lookup(self, sub: str, kid: str) -> dict[str, Any] | None:
        return None


def _matches(value: str, allowed: tuple[str, ...]) -> bool:
    for pattern in allowed:
        if pattern.endswith(":*"):
            port = value[len(pattern) - 1 :]
            if value.startswith(pattern[:-1]) and port.isascii() and port.isdigit():
                return True
        elif value == pattern:
            return True
    return False


class McpGuard:
    """The ASGI guard in front of the MCP SDK's streamable HTTP app (see module doc)."""

    def __init__(
        self,
        app: ASGIApp,
        resource: McpResource,
        sessions: SessionVerifier,
        nonces: NonceIssuer | None = None,
        max_body: int = 1 << 20,
        body_timeout_s: float = 10.0,
        gateway_key: GatewayKey | None = None,
    ) -> None:
        self.app = app
        #: Vouches for this endpoint's URI as a proof's ``htu`` (without it, a DPoP-bound
        #: session is refused here: its proofs cannot be checked).
        self.gateway_key = gateway_key
        self._proofs = ProofVerifier(_NoKeys(), gateway_key, nonces)
        self.resource = resource
        self.sessions = sessions
        self.nonces = nonces
        self.max_body = max_body
        self.body_timeout_s = body_timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope, receive)
        refused = self._refusal(request)
        if refused is None and scope[CALLER_KEY].caller.jkt is not None:
            refused = await self._unproven(scope[CALLER_KEY])
        if refused is not None:
            await refused(scope, receive, send)
            return
        try:
            body = await read_body(request, self.max_body, self.body_timeout_s)
        except HandshakeError as exc:
            await error_response(exc)(scope, receive, send)
            return
        malformed = not_one_message(body) if body else None  # nothing to quote: the SDK's
        if malformed is not None:
            await malformed(scope, receive, send)
            return
        await self.app(scope, replay(body, receive), send)

    def _refusal(self, request: Request) -> Response | None:
        """The response refusing this request, or ``None`` (and the caller in its scope)."""
        host = request.headers.get("host", "").lower()
        if not _matches(host, self.resource.hosts):
            return _plain(421, "this gateway does not serve that Host")
        origins = request.headers.getlist("origin")
        if len(origins) > 1 or (
            origins and not _matches(origins[0].lower(), self.resource.origins)
        ):
            return _plain(403, "Origin not allowed")
        auth = request.headers.get("authorization", "")
        token = bearer_token(auth) if len(auth) <= _MAX_AUTH else None
        if token is None:
            return self._challenge(None)
        try:
            caller = self.sessions.verify(f"Bearer {token}")
        except Unauthenticated as exc:
            return self._challenge(exc.message)
        missing = [s for s in self.resource.required_scopes if s not in caller.scopes]
        if missing:
            return self._insufficient(missing)
        proof = request.headers.get(DPOP_HEADER)
        if proof is not None:
            try:
                check_proof(proof, self.nonces)
            except UseDpopNonce:
                return self._use_nonce()
            except ValidationFailed as exc:
                return _json(401, {"error": "invalid_dpop_proof", "error_description": exc.message},
                             {"WWW-Authenticate": 'DPoP error="invalid_dpop_proof"'})  # fmt: skip
        request.scope[CALLER_KEY] = McpCaller(caller, token, proof, self.resource.url)
        # The SDK's principal for this request (the session JWT itself is not kept there).
        access = AccessToken(
            token="-",  # noqa: S106
            client_id=caller.sub,
            scopes=sorted(caller.scopes),
            resource=self.resource.url,
            subject=caller.sub,
            claims={"iss": self.resource.issuer},
        )
        request.scope["user"] = AuthenticatedUser(access)
        return None

    async def _unproven(self, who: McpCaller) -> Response | None:
        """The refusal of a DPoP-bound session (``cnf.jkt``) that came without a valid
        proof of its key for this request (RFC 9449 section 7.2), public tools included."""
        if who.dpop is None:
            return self._bound_needs_proof()
        htu = self.resource.url
        tag = self.gateway_key.tag(htu, who.dpop) if self.gateway_key else None
        try:
            await self._proofs.verify_dpop(who.dpop, who.caller, htu=htu, htu_tag=tag,
                                           authorization=f"Bearer {who.session}")  # fmt: skip
        except ValidationFailed as exc:
            return _json(401, {"error": "invalid_dpop_proof", "error_description": exc.message},
                         {"WWW-Authenticate": 'DPoP error="invalid_dpop_proof"'})  # fmt: skip
        return None

    def _bound_needs_proof(self) -> Response:
        description = ("this session is DPoP-bound (cnf.jkt): send it as 'DPoP <session>' "
                       "with a DPoP proof (RFC 9449) of its key on every request")  # fmt: skip
        header = (f'DPoP error="invalid_token", error_description="{description}", '
                  f'algs="{" ".join(PROOF_ALGORITHMS)}"')  # fmt: skip
        return _json(401, {"error": "invalid_token", "error_description": description},
                     {"WWW-Authenticate": header})  # fmt: skip

    def _challenge(self, description: str | None) -> Response:
        parts = [f'resource_metadata="{self.resource.metadata_url}"']
        if description is not None:
            parts += ['error="invalid_token"', f'error_description="{description}"']
        dpop = f'DPoP algs="{" ".join(PROOF_ALGORITHMS)}"'
        body = {"error": "invalid_token", "error_description": description or "session required"}
        return _json(401, body, {"WWW-Authenticate": f"Bearer {', '.join(parts)}, {dpop}"})

    def _insufficient(self, missing: list[str]) -> Response:
        scope = " ".join(missing)
        header = (f'Bearer error="insufficient_scope", scope="{scope}", '
                  f'resource_metadata="{self.resource.metadata_url}"')  # fmt: skip
        body = {"error": "insufficient_scope", "error_description": f"needs scope {scope}"}
        return _json(403, body, {"WWW-Authenticate": header})

    def _use_nonce(self) -> Response:
        assert self.nonces is not None
        headers = {"WWW-Authenticate": 'DPoP error="use_dpop_nonce"',
                   "DPoP-Nonce": self.nonces.issue()}  # fmt: skip
        body = {"error": "use_dpop_nonce", "error_description": UseDpopNonce.default_message}
        return _json(401, body, headers)


def _json(status: int, body: dict[str, str], headers: dict[str, str]) -> Response:
    headers = {**headers, "Cache-Control": "no-store"}
    return Response(json.dumps(body), status, headers, media_type="application/json")


def _plain(status: int, message: str) -> Response:
    return _json(status, {"error": "invalid_request", "error_description": message}, {})
