"""What every console route needs: settings, sessions, the backend, the templates."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import jinja2
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from mcp_handshake.services.console.backend import Backend
from mcp_handshake.services.console.oidc import OidcLogin
from mcp_handshake.services.console.security import check_post, origin_of
from mcp_handshake.services.console.sessions import ConsoleSession, SessionStore
from mcp_handshake.services.console.settings import ConsoleSettings

__all__ = ["AUDIT_ROLES", "Console", "templates"]

#: Who may read the audit views.
AUDIT_ROLES = frozenset({"auditor", "operator"})


def templates() -> jinja2.Environment:
    """Jinja2 with autoescape on for everything: no text is ever rendered as HTML."""
    return jinja2.Environment(
        loader=jinja2.PackageLoader("mcp_handshake.services.console", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )


@dataclass
class Console:
    cs: ConsoleSettings
    store: SessionStore
    backend: Backend
    env: jinja2.Environment
    oidc: OidcLogin | None = None

    @property
    def origin(self) -> str:
        return origin_of(self.cs.base_url)

    def is_approver(self, session: ConsoleSession | None) -> bool:
        return bool(session and session.roles & self.backend.policy.all_approver_roles)

    def is_auditor(self, session: ConsoleSession | None) -> bool:
        return bool(session and session.roles & AUDIT_ROLES)

    def may_see_status(self, session: ConsoleSession | None) -> bool:
        return self.is_approver(session) or self.is_auditor(session)

    def session(self, request: Request) -> ConsoleSession | None:
        return self.store.get(request)

    def user(self, request: Request) -> ConsoleSession:
        """The signed-in user's session; a redirect to the login page otherwise."""
        session = self.store.get(request)
        if session is None or not session.signed_in:
            raise HTTPException(303, headers={"Location": "/login"})
        return session

    async def posted(self, request: Request) -> ConsoleSession:
        """A signed-in user's form, its CSRF token checked (403 without it)."""
        session = self.store.get(request)
        await check_post(request, session, self.origin)
        if session is None or not session.signed_in:
            raise HTTPException(303, headers={"Location": "/login"})
        return session

    def page(
        self, name: str, session: ConsoleSession | None, status: int = 200, **values: Any
    ) -> HTMLResponse:
        flash = None
        if session is not None:
            flash, session.flash = session.flash, None
        html = self.env.get_template(name).render(
            user=session if session and session.signed_in else None,
            csrf=session.csrf if session else "",
            approver=self.is_approver(session),
            auditor=self.is_auditor(session),
            status_ok=self.may_see_status(session),
            flash=flash,
            **values,
        )
        return HTMLResponse(html, status_code=status)

    def redirect(self, to: str, session: ConsoleSession | None = None) -> Response:
        response = RedirectResponse(to, status_code=303)
        if session is not None:
            self.store.set_cookie(response, session)
        return response
