"""First contact with Redis at start-up: refused credentials and failed TLS handshakes
become one clear error (the worker exits with its line), a store that is merely down
does not stop the start."""

from __future__ import annotations

import asyncio
import logging
import ssl
from urllib.parse import urlsplit

from redis.exceptions import AuthenticationError, NoPermissionError

from mcp_handshake.shared.errors import Unauthenticated, Unavailable
from mcp_handshake.shared.settings import Settings

from .redis import Client, SentinelClient, StoreError, urls, where

__all__ = ["check_redis"]

log = logging.getLogger(__name__)


async def check_redis(client: Client, settings: Settings, deadline_s: float = 5.0) -> None:
    """First contact at start-up, within ``deadline_s``: credentials refused (or an ACL
    user that may not even ``PING``) raise ``Unauthenticated``, a failed TLS handshake
    ``Unavailable``; a store that does not answer yet is only logged (requests are then
    ``unavailable`` until it does)."""
    at = where(settings)
    try:
        async with asyncio.timeout(deadline_s):
            await client.ping()
    except NoPermissionError:
        raise Unauthenticated(f"Redis at {at}: {_user(settings)} may not run PING") from None
    except AuthenticationError:
        raise Unauthenticated(_refused(at, settings)) from None
    except (*StoreError, OSError, TimeoutError) as exc:
        if isinstance(client, SentinelClient):  # redis-py skips sentinels that refuse us
            await _check_sentinels(client, settings)
        tls = _tls_failure(exc)
        if tls is not None:
            raise Unavailable(
                f"TLS handshake with Redis at {at} failed: {tls} (HANDSHAKE_REDIS_TLS_CA)"
            ) from None
        if _auth_failure(exc):
            raise Unauthenticated(_refused(at, settings)) from None
        log.warning("Redis at %s does not answer yet (%s)", at, type(exc).__name__)


async def _check_sentinels(client: SentinelClient, settings: Settings) -> None:
    """Why no sentinel named a master, when the reason is credentials or TLS."""
    for sentinel in client.watched_by.sentinels if client.watched_by else []:
        try:
            async with asyncio.timeout(2.0):
                await sentinel.ping()
        except (AuthenticationError, NoPermissionError):
            who = settings.redis_sentinel_username or "the default user"
            raise Unauthenticated(
                f"Redis sentinels at {where(settings)} refused the credentials of {who} "
                "(HANDSHAKE_REDIS_SENTINEL_PASSWORD_FILE)"
            ) from None
        except (*StoreError, OSError, TimeoutError) as exc:
            tls = _tls_failure(exc)
            if tls is not None:
                raise Unavailable(
                    f"TLS handshake with Redis sentinels at {where(settings)} failed: {tls}"
                ) from None


def _refused(at: str, settings: Settings) -> str:
    return f"Redis at {at} refused the credentials of {_user(settings)}"


def _user(settings: Settings) -> str:
    user = settings.redis_username or urlsplit(urls(settings)[0]).username
    return f"user {user}" if user else "the default user"


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in seen:
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


def _tls_failure(exc: BaseException) -> str | None:
    """Why a TLS handshake failed, if that is what ``exc`` (or its cause) says."""
    for err in _chain(exc):
        if isinstance(err, ssl.SSLCertVerificationError):
            return err.verify_message or "certificate verify failed"
        if isinstance(err, ssl.SSLError):
            return str(err.reason or err)
    text = " ".join(str(e) for e in _chain(exc))
    for marker in ("certificate verify failed", "SSL", "TLS"):
        if marker in text:
            return "certificate verify failed" if "verify" in text else "TLS error"
    return None


def _auth_failure(exc: BaseException) -> bool:
    """Whether a wrapped error (a cluster's or sentinel's) is a refused login."""
    text = " ".join(str(e) for e in _chain(exc)).lower()
    markers = ("wrongpass", "invalid username-password", "noauth", "authentication")
    return any(isinstance(e, AuthenticationError) for e in _chain(exc)) or any(
        m in text for m in markers
    )
