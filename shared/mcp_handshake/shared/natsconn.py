"""How every process connects to NATS: its identity, its inbox prefix, its servers.

Each NATS user may subscribe only under its own inbox prefix
(``_INBOX.<user>``), so replies to one identity cannot be read by another.
Clients in any language set the same prefix (nats.go ``CustomInboxPrefix``,
nats.js ``inboxPrefix``, nats-py ``inbox_prefix``).
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from nats.aio.client import Client as NATS
from nats.errors import AuthorizationError
from nats.errors import Error as NatsError

from .errors import Unauthenticated, Unavailable
from .settings import Settings

__all__ = ["connect_options", "identity_refused", "inbox_prefix", "redact", "tls_context"]


def inbox_prefix(user: str | None) -> str:
    """The inbox prefix of a NATS user (``_INBOX`` for an anonymous connection)."""
    return f"_INBOX.{user}" if user else "_INBOX"


def tls_context(settings: Settings) -> ssl.SSLContext | None:
    """The TLS context the settings ask for (a private CA, a client certificate), if any."""
    ca, cert, key = settings.nats_tls_ca, settings.nats_tls_cert, settings.nats_tls_key
    if ca is None and cert is None:
        return None
    context = ssl.create_default_context(cafile=str(ca) if ca else None)
    if cert is not None:
        context.load_cert_chain(str(cert), str(key) if key else None)
    return context


def connect_options(settings: Settings, name: str) -> dict[str, Any]:
    """Keyword arguments for ``nats.connect`` from settings: servers, identity, inbox,
    TLS and credentials (user/password, token, ``.creds`` file or nkey seed)."""
    servers = [u.strip() for u in settings.nats_url.split(",") if u.strip()]
    # A user given in the URL (nats://user:password@host) names the inbox as well.
    user = settings.nats_user or (urlsplit(servers[0]).username if servers else None)
    options: dict[str, Any] = {
        "servers": servers,
        "name": name,
        "inbox_prefix": inbox_prefix(user),
    }
    password = settings.nats_password() if settings.nats_user else None
    if settings.nats_user and (password is not None or not _key_auth(settings)):
        options["user"] = settings.nats_user
        options["password"] = password
    if settings.nats_token:
        options["token"] = settings.nats_token
    if settings.nats_creds is not None:
        options["user_credentials"] = str(settings.nats_creds)
    elif settings.nats_nkey_seed is not None:
        options["nkeys_seed"] = str(settings.nats_nkey_seed)
    tls = tls_context(settings)
    if tls is not None:
        options["tls"] = tls
    return options


def _key_auth(settings: Settings) -> bool:
    """Whether the identity is proven by a key or token (the user then only names the inbox)."""
    return bool(settings.nats_creds or settings.nats_nkey_seed or settings.nats_token)


def identity_refused(exc: BaseException) -> bool:
    """Whether a connection error is the server refusing the credentials (nats-py raises
    either its ``AuthorizationError`` or a plain error naming the violation)."""
    return isinstance(exc, AuthorizationError) or "authorization" in str(exc).lower()


def redact(urls: str) -> str:
    """Server URL(s) fit to print: any user, password or token replaced by ``***``."""
    out = []
    for url in urls.split(","):
        parts = urlsplit(url.strip())
        if "@" in parts.netloc:
            parts = parts._replace(netloc="***@" + parts.netloc.rsplit("@", 1)[1])
        out.append(urlunsplit(parts))
    return ",".join(out)


async def connect_bounded(settings: Settings, name: str, deadline_s: float, **options: Any) -> NATS:
    """A connection made within ``deadline_s``, or one protocol error: a refused identity
    is ``Unauthenticated``, anything else ``Unavailable`` (credentials never shown).
    ``options`` (callbacks, reconnect behaviour) go to ``nats.connect`` as they are."""
    nc = NATS()
    where = redact(settings.nats_url)
    try:
        async with asyncio.timeout(deadline_s):
            await nc.connect(**connect_options(settings, name), **options)
    except AuthorizationError:
        await _close_quietly(nc)
        raise Unauthenticated(f"NATS at {where} refused this identity") from None
    except (OSError, TimeoutError, NatsError):
        await _close_quietly(nc)
        raise Unavailable(f"cannot reach NATS at {where}") from None
    return nc


async def _close_quietly(nc: NATS) -> None:
    with contextlib.suppress(Exception):
        await nc.close()
