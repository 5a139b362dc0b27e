"""How every process connects to NATS: its identity, its inbox prefix, its servers.

Each NATS user may subscribe only under its own inbox prefix
(``_INBOX.<user>``), so replies to one identity cannot be read by another.
Clients in any language set the same prefix (nats.go ``CustomInboxPrefix``,
nats.js ``inboxPrefix``, nats-py ``inbox_prefix``).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit, urlunsplit

from .settings import Settings

__all__ = ["connect_options", "inbox_prefix", "redact"]


def inbox_prefix(user: str | None) -> str:
    """The inbox prefix of a NATS user (``_INBOX`` for an anonymous connection)."""
    return f"_INBOX.{user}" if user else "_INBOX"


def connect_options(settings: Settings, name: str) -> dict[str, Any]:
    """Keyword arguments for ``nats.connect`` from settings: servers, identity, inbox."""
    servers = [u.strip() for u in settings.nats_url.split(",") if u.strip()]
    # A user given in the URL (nats://user:password@host) names the inbox as well.
    user = settings.nats_user or (urlsplit(servers[0]).username if servers else None)
    options: dict[str, Any] = {
        "servers": servers,
        "name": name,
        "inbox_prefix": inbox_prefix(user),
    }
    if settings.nats_user:
        options["user"] = settings.nats_user
        options["password"] = settings.nats_password()
    return options


def redact(urls: str) -> str:
    """Server URL(s) fit to print: any user, password or token replaced by ``***``."""
    out = []
    for url in urls.split(","):
        parts = urlsplit(url.strip())
        if "@" in parts.netloc:
            parts = parts._replace(netloc="***@" + parts.netloc.rsplit("@", 1)[1])
        out.append(urlunsplit(parts))
    return ",".join(out)
