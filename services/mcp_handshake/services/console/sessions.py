"""Server-side console sessions behind a signed, HttpOnly, SameSite=Strict cookie.

The cookie holds only a random session id, signed with the console secret
(itsdangerous); what the session knows (who signed in, their roles, their
session JWT for the mediator, the CSRF token) stays in this process. Signing
in replaces the id (no session fixation); signing out forgets it. Sessions
are per console process: behind a load balancer, keep a user on one instance
(sticky sessions) or run one console.
"""

from __future__ import annotations

import hmac
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass, field

from itsdangerous import BadSignature, URLSafeTimedSerializer
from starlette.requests import Request
from starlette.responses import Response

__all__ = ["ConsoleSession", "SessionStore"]

ANON_TTL_S = 3600


@dataclass(slots=True)
class ConsoleSession:
    sid: str
    csrf: str
    expires_at: float
    sub: str | None = None
    roles: frozenset[str] = frozenset()
    #: The user's session JWT, sent to the mediator with each of their requests.
    token: str | None = field(default=None, repr=False)
    #: One message for the next page (a decision's outcome, an error).
    flash: str | None = None

    @property
    def signed_in(self) -> bool:
        return self.sub is not None and self.token is not None

    def csrf_ok(self, sent: str | None) -> bool:
        return bool(sent) and hmac.compare_digest(self.csrf.encode(), (sent or "").encode())


class SessionStore:
    def __init__(self, secret: str, *, secure: bool, max_sessions: int = 10_000) -> None:
        self._signer = URLSafeTimedSerializer(secret, salt="mcp-handshake-console")
        self._sessions: OrderedDict[str, ConsoleSession] = OrderedDict()
        self._max = max_sessions
        self.secure = secure
        # The __Host- prefix pins the cookie to this origin; it needs Secure.
        self.cookie = "__Host-hs_console" if secure else "hs_console"

    def get(self, request: Request) -> ConsoleSession | None:
        raw = request.cookies.get(self.cookie)
        if not raw:
            return None
        try:
            sid = self._signer.loads(raw, max_age=24 * 3600)
        except BadSignature:
            return None
        session = self._sessions.get(str(sid))
        if session is None or session.expires_at <= time.time():
            self._sessions.pop(str(sid), None)
            return None
        return session

    def new(self, ttl_s: float = ANON_TTL_S) -> ConsoleSession:
        while len(self._sessions) >= self._max:
            # Anonymous visitors go first: a flood of them never signs a user out.
            anon = next((k for k, s in self._sessions.items() if not s.signed_in), None)
            if anon is None:
                self._sessions.popitem(last=False)
            else:
                del self._sessions[anon]
        session = ConsoleSession(secrets.token_urlsafe(32), secrets.token_urlsafe(32),
                                 time.time() + ttl_s)  # fmt: skip
        self._sessions[session.sid] = session
        return session

    def sign_in(
        self, old: ConsoleSession | None, sub: str, roles: frozenset[str], token: str, ttl_s: float
    ) -> ConsoleSession:
        """A fresh session (new id, new CSRF token) for a user who just proved who they are."""
        if old is not None:
            self.forget(old)
        session = self.new(ttl_s)
        session.sub, session.roles, session.token = sub, roles, token
        return session

    def forget(self, session: ConsoleSession) -> None:
        self._sessions.pop(session.sid, None)

    def set_cookie(self, response: Response, session: ConsoleSession) -> None:
        response.set_cookie(
            self.cookie,
            self._signer.dumps(session.sid),
            max_age=max(int(session.expires_at - time.time()), 1),
            path="/",
            secure=self.secure,
            httponly=True,
            samesite="strict",
        )

    def clear_cookie(self, response: Response) -> None:
        response.delete_cookie(self.cookie, path="/", secure=self.secure, httponly=True,
                               samesite="strict")  # fmt: skip
