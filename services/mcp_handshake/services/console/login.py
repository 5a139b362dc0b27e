"""Signing in and out: OIDC (authorization code + PKCE), or the dev stack's dev login."""

from __future__ import annotations

import asyncio
import re
import time
from typing import Any

import jwt
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from mcp_handshake.services.console.context import Console
from mcp_handshake.services.console.oidc import FLOW_TTL_S, LOGIN_COOKIE, LoginFailed
from mcp_handshake.services.console.security import check_post
from mcp_handshake.services.dev.devhome import mint_session

__all__ = ["DEV_ROLES", "login_routes"]

#: Roles the dev login offers (any subset may be picked).
DEV_ROLES = ("approver", "auditor", "operator", "treasury", "billing")
_SUB = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")


def _roles(claims: dict[str, Any], claim: str) -> frozenset[str]:
    value = claims.get(claim)
    if isinstance(value, str):
        return frozenset(value.split())
    if isinstance(value, list):
        return frozenset(v for v in value if isinstance(v, str))
    return frozenset()


def _ttl(c: Console, token: str) -> float:
    """A login lasts as long as its session token, and at most the configured time."""
    try:
        exp = jwt.decode(token, options={"verify_signature": False}).get("exp")
    except jwt.PyJWTError:  # an opaque token: the configured time
        exp = None
    left = float(exp) - time.time() if isinstance(exp, int | float) else c.cs.login_ttl_s
    return max(min(left, c.cs.login_ttl_s), 1.0)


async def login_page(request: Request) -> Response:
    c: Console = request.app.state.console
    session = c.session(request) or c.store.new()
    response = c.page("login.html", session, dev_login=c.cs.dev_login,
                      oidc=c.oidc is not None, dev_roles=DEV_ROLES)  # fmt: skip
    c.store.set_cookie(response, session)
    return response


async def dev_login(request: Request) -> Response:
    c: Console = request.app.state.console
    if not c.cs.dev_login:
        raise HTTPException(404)
    session = c.session(request)
    await check_post(request, session, c.origin)
    form = await request.form()
    sub = str(form.get("sub") or "")
    if not _SUB.match(sub):
        return c.page(
            "login.html",
            session,
            400,
            dev_login=True,
            oidc=c.oidc is not None,
            dev_roles=DEV_ROLES,
            error="a user name is 1-64 letters, digits, ._@-",
        )
    roles = [r for r in DEV_ROLES if form.get(f"role_{r}")]
    token = await asyncio.to_thread(mint_session, c.backend.settings.home, sub, roles=roles)
    user = c.store.sign_in(session, sub, frozenset(roles), token, _ttl(c, token))
    return c.redirect("/", user)


async def oidc_start(request: Request) -> Response:
    c: Console = request.app.state.console
    if c.oidc is None:
        raise HTTPException(404)
    try:
        url, cookie = await c.oidc.start()
    except LoginFailed as exc:
        return c.page("login.html", c.session(request), 502, dev_login=c.cs.dev_login,
                      oidc=True, dev_roles=DEV_ROLES, error=str(exc))  # fmt: skip
    response = RedirectResponse(url, status_code=303)
    response.set_cookie(LOGIN_COOKIE, cookie, max_age=FLOW_TTL_S, path="/login/callback",
                        secure=c.store.secure, httponly=True, samesite="lax")  # fmt: skip
    return response


async def oidc_callback(request: Request) -> Response:
    c: Console = request.app.state.console
    if c.oidc is None:
        raise HTTPException(404)
    try:
        done = await c.oidc.finish(dict(request.query_params),
                                   request.cookies.get(LOGIN_COOKIE))  # fmt: skip
    except LoginFailed as exc:
        return c.page("login.html", None, 400, dev_login=c.cs.dev_login, oidc=True,
                      dev_roles=DEV_ROLES, error=str(exc))  # fmt: skip
    roles = _roles(done.claims, c.backend.cfg.session.roles_claim)
    user = c.store.sign_in(c.session(request), done.sub, roles, done.session_token,
                           _ttl(c, done.session_token))  # fmt: skip
    # A page, not a redirect: the Strict cookie is sent from a same-site navigation.
    response = c.page("signed_in.html", user)
    c.store.set_cookie(response, user)
    response.delete_cookie(LOGIN_COOKIE, path="/login/callback")
    return response


async def logout(request: Request) -> Response:
    c: Console = request.app.state.console
    session = c.session(request)
    await check_post(request, session, c.origin)
    response = RedirectResponse("/login", status_code=303)
    if session is not None:
        c.store.forget(session)
    c.store.clear_cookie(response)
    return response


def login_routes() -> list[Route]:
    return [
        Route("/login", login_page),
        Route("/login/dev", dev_login, methods=["POST"]),
        Route("/login/oidc", oidc_start),
        Route("/login/callback", oidc_callback),
        Route("/logout", logout, methods=["POST"]),
    ]
