"""The console's Starlette application."""

from __future__ import annotations

import logging
from importlib import resources
from typing import Any

from nats.errors import Error as NatsError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from mcp_handshake.services.console.backend import Backend
from mcp_handshake.services.console.context import Console, templates
from mcp_handshake.services.console.login import login_routes
from mcp_handshake.services.console.oidc import OidcLogin
from mcp_handshake.services.console.pages import page_routes
from mcp_handshake.services.console.security import SecurityHeaders
from mcp_handshake.services.console.sessions import SessionStore
from mcp_handshake.services.console.settings import ConsoleSettings, load_secret
from mcp_handshake.shared.errors import HandshakeError

__all__ = ["create_app"]

log = logging.getLogger(__name__)

_CSS = resources.files("mcp_handshake.services.console").joinpath("static/console.css")


def create_app(cs: ConsoleSettings, backend: Backend) -> Starlette:
    cs.check()
    secret = load_secret(cs.secret_file, cs.create_secret)
    console = Console(
        cs=cs,
        store=SessionStore(secret, secure=cs.secure_cookies),
        backend=backend,
        env=templates(),
        oidc=OidcLogin(cs, secret) if cs.oidc_issuer and cs.oidc_client_id else None,
    )
    css = _CSS.read_text()

    async def stylesheet(request: Request) -> Response:
        return PlainTextResponse(css, media_type="text/css")

    async def healthz(request: Request) -> Response:
        return PlainTextResponse("ok" if backend.nc.is_connected else "nats down",
                                 status_code=200 if backend.nc.is_connected else 503)  # fmt: skip

    routes = [
        *login_routes(),
        *page_routes(),
        Route("/static/console.css", stylesheet),
        Route("/healthz", healthz),
    ]

    async def unavailable(request: Request, exc: Exception) -> Response:
        # Fail closed, with a clear page and no detail (no token, no internal state).
        log.warning("console request failed: %s", type(exc).__name__)
        return console.page("unavailable.html", console.session(request), 503)

    failures: dict[Any, Any] = {e: unavailable for e in (HandshakeError, NatsError, OSError,
                                                          TimeoutError, ValueError)}  # fmt: skip
    app = Starlette(routes=routes, exception_handlers=failures)
    app.state.console = console
    app.add_middleware(SecurityHeaders, https=cs.base_url.startswith("https://"))
    return app
