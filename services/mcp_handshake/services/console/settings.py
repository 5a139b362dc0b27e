"""The console's own settings (``HANDSHAKE_CONSOLE_*``), read once by its entry point."""

from __future__ import annotations

import ipaddress
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from urllib.parse import urlsplit

from mcp_handshake.shared.settings import write_private

__all__ = ["ConsoleSettings", "load_secret"]

#: Longest a console login lasts, whatever the session token says.
MAX_LOGIN_S = 8 * 3600


@dataclass(frozen=True, slots=True)
class ConsoleSettings:
    host: str = "127.0.0.1"
    port: int = 8090
    #: The URL browsers use (``HANDSHAKE_CONSOLE_URL``); default ``http://host:port``.
    public_url: str = ""
    #: The cookie-signing secret's file (created 0600 when missing, unless named by
    #: ``HANDSHAKE_CONSOLE_SECRET_FILE``: then it must exist).
    secret_file: Path = Path(".handshake/secrets/console_secret")
    create_secret: bool = True
    #: Dev login: anyone may sign in as anyone, with sessions minted by the dev
    #: identity provider under ``HANDSHAKE_HOME``. Only for the dev stack.
    dev_login: bool = False
    oidc_issuer: str | None = None
    oidc_client_id: str | None = None
    oidc_client_secret_file: Path | None = None
    oidc_scopes: str = "openid profile"
    #: Which OIDC token the console forwards to the mediator as the session:
    #: ``access_token`` (a JWT for the mediator's audience) or ``id_token``.
    oidc_session_token: str = "access_token"  # noqa: S105 - a token's name, not a token
    #: A folder of approver keys (``<sub>.pem``) the console signs decisions with.
    approver_keys: Path | None = None
    login_ttl_s: int = MAX_LOGIN_S
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def base_url(self) -> str:
        return (self.public_url or f"http://{self.host}:{self.port}").rstrip("/")

    @property
    def secure_cookies(self) -> bool:
        """``Secure`` cookies, except for plain-http dev on a loopback address."""
        url = urlsplit(self.base_url)
        return not (url.scheme == "http" and _loopback(url.hostname or ""))

    def check(self) -> None:
        """Refuse settings that would expose the console insecurely or lock everyone out."""
        url = urlsplit(self.base_url)
        if url.scheme not in {"http", "https"}:
            raise ValueError("HANDSHAKE_CONSOLE_URL must be an http(s) URL")
        if url.scheme == "http" and not _loopback(url.hostname or ""):
            raise ValueError(
                "the console is served over plain http only on a loopback address; "
                "put it behind TLS and set HANDSHAKE_CONSOLE_URL=https://..."
            )
        if self.dev_login and not _loopback(self.host):
            raise ValueError("dev login is for the local dev stack: listen on a loopback address")
        if not self.dev_login and not (self.oidc_issuer and self.oidc_client_id):
            raise ValueError("set HANDSHAKE_CONSOLE_OIDC_ISSUER and _CLIENT_ID (or dev login)")
        if self.oidc_session_token not in {"access_token", "id_token"}:
            raise ValueError("HANDSHAKE_CONSOLE_OIDC_SESSION_TOKEN: access_token or id_token")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ConsoleSettings:
        e = os.environ if env is None else env
        home = Path(e.get("HANDSHAKE_HOME", ".handshake"))

        def path(name: str) -> Path | None:
            return Path(e[name]) if e.get(name) else None

        return cls(
            host=e.get("HANDSHAKE_CONSOLE_HOST", "127.0.0.1"),
            port=int(e.get("HANDSHAKE_CONSOLE_PORT", "8090")),
            public_url=e.get("HANDSHAKE_CONSOLE_URL", ""),
            secret_file=path("HANDSHAKE_CONSOLE_SECRET_FILE")
            or home / "secrets" / "console_secret",
            create_secret=not e.get("HANDSHAKE_CONSOLE_SECRET_FILE"),
            dev_login=e.get("HANDSHAKE_CONSOLE_DEV_LOGIN", "") in {"1", "true", "yes"},
            oidc_issuer=e.get("HANDSHAKE_CONSOLE_OIDC_ISSUER") or None,
            oidc_client_id=e.get("HANDSHAKE_CONSOLE_OIDC_CLIENT_ID") or None,
            oidc_client_secret_file=path("HANDSHAKE_CONSOLE_OIDC_CLIENT_SECRET_FILE"),
            oidc_scopes=e.get("HANDSHAKE_CONSOLE_OIDC_SCOPES", "openid profile"),
            oidc_session_token=e.get("HANDSHAKE_CONSOLE_OIDC_SESSION_TOKEN", "access_token"),
            approver_keys=path("HANDSHAKE_CONSOLE_APPROVER_KEYS"),
            login_ttl_s=min(int(e.get("HANDSHAKE_CONSOLE_LOGIN_TTL_S", str(MAX_LOGIN_S))),
                            MAX_LOGIN_S),
        )  # fmt: skip

    def with_(self, **changes: object) -> ConsoleSettings:
        return replace(self, **changes)  # type: ignore[arg-type]


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def load_secret(path: Path, create: bool = True) -> str:
    """The cookie-signing secret: read from its file, or created there (0600) when
    ``create``; a file the operator named must exist (a deployment mounts it read-only)."""
    if not create and not path.exists():
        raise ValueError(
            f"{path}: the console secret file is missing (deploy/keys.py init or console writes it)"
        )
    if path.is_file():
        value = path.read_text().strip()
        if len(value) < 32:
            raise ValueError(f"{path}: the console secret must be at least 32 characters")
        if path.stat().st_mode & 0o077:
            raise ValueError(f"{path}: the console secret must be readable by its owner only")
        return value
    value = secrets.token_urlsafe(48)
    write_private(path, value)
    return value
