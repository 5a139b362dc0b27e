"""Response headers for every page, and the CSRF check of every state change."""

from __future__ import annotations

from urllib.parse import urlsplit

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mcp_handshake.services.console.sessions import ConsoleSession

__all__ = ["CSP", "SecurityHeaders", "check_post"]

#: No script at all, styles from this origin only, never framed, forms post here only.
CSP = ("default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
       "frame-ancestors 'none'; base-uri 'none'")  # fmt: skip

_HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cross-origin-resource-policy", b"same-origin"),
    (b"cache-control", b"no-store"),
]


class SecurityHeaders:
    """Adds the headers above to every response (HSTS too when served over https)."""

    def __init__(self, app: ASGIApp, *, https: bool) -> None:
        self.app = app
        self.headers = list(_HEADERS)
        if https:
            self.headers.append((b"strict-transport-security", b"max-age=31536000"))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                names = {k.lower() for k, _ in message.get("headers", [])}
                message["headers"] = [
                    *message.get("headers", []),
                    *((k, v) for k, v in self.headers if k not in names),
                ]
            await send(message)

        await self.app(scope, receive, with_headers)


async def check_post(request: Request, session: ConsoleSession | None, origin: str) -> None:
    """403 unless the form carries this session's CSRF token and, when the browser says
    where the request comes from, it comes from the console itself."""
    sent_from = request.headers.get("origin")
    if sent_from is not None and sent_from != origin:
        raise HTTPException(403, "cross-origin form refused")
    if request.headers.get("sec-fetch-site") not in {None, "same-origin", "none"}:
        raise HTTPException(403, "cross-site form refused")
    form = await request.form()
    token = form.get("csrf")
    if session is None or not session.csrf_ok(token if isinstance(token, str) else None):
        raise HTTPException(403, "missing or wrong CSRF token")


def origin_of(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"
