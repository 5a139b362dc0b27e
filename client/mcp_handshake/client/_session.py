"""Where session tokens come from: a string, env var, file, command or callable.

Providers re-read their source when the cached token is within ``refresh_s``
of its expiry, so long-running agents keep working across session refreshes.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import shlex
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Protocol

import jwt

__all__ = [
    "CallableSession",
    "CommandSession",
    "EnvSession",
    "FileSession",
    "SessionProvider",
    "StaticSession",
    "as_provider",
]


class SessionProvider(Protocol):
    async def token(self) -> str: ...


def _expiry(token: str) -> float:
    """``exp`` read without verification: only to know when to refresh, never to trust."""
    try:
        exp = jwt.decode(token, options={"verify_signature": False}).get("exp")
    except jwt.PyJWTError:
        return 0.0
    return float(exp) if isinstance(exp, int | float) else float("inf")


class _Cached:
    refresh_s = 30.0

    def __init__(self) -> None:
        self._token: str | None = None
        self._exp = 0.0
        self._lock = asyncio.Lock()

    async def _load(self) -> str:
        raise NotImplementedError

    async def token(self) -> str:
        if self._token and time.time() < self._exp - self.refresh_s:
            return self._token
        async with self._lock:
            if not (self._token and time.time() < self._exp - self.refresh_s):
                self._token = (await self._load()).strip()
                self._exp = _expiry(self._token)
        return self._token


class StaticSession(_Cached):
    def __init__(self, token: str) -> None:
        super().__init__()
        self._value = token

    async def _load(self) -> str:
        return self._value


class EnvSession(_Cached):
    def __init__(self, var: str = "HANDSHAKE_SESSION") -> None:
        super().__init__()
        self._var = var

    async def _load(self) -> str:
        value = os.environ.get(self._var)
        if not value:
            raise RuntimeError(f"no session token in ${self._var}")
        return value


class FileSession(_Cached):
    def __init__(self, path: str | Path) -> None:
        super().__init__()
        self._path = Path(path)

    async def _load(self) -> str:
        return await asyncio.to_thread(self._path.read_text)


class CommandSession(_Cached):
    """Runs a command (e.g. an IdP CLI) and uses what it prints."""

    def __init__(self, command: str | list[str]) -> None:
        super().__init__()
        self._argv = shlex.split(command) if isinstance(command, str) else list(command)

    async def _load(self) -> str:
        proc = await asyncio.create_subprocess_exec(
            *self._argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL
        )
        out, _ = await proc.communicate()
        if proc.returncode != 0:
            raise RuntimeError(f"session command exited with {proc.returncode}")
        return out.decode()


class CallableSession(_Cached):
    def __init__(self, fn: Callable[[], str | Awaitable[str]]) -> None:
        super().__init__()
        self._fn = fn

    async def _load(self) -> str:
        value = self._fn()
        if inspect.isawaitable(value):
            value = await value
        return str(value)


def as_provider(
    session: SessionProvider | str | Callable[[], str | Awaitable[str]] | None,
) -> SessionProvider:
    """Accept a provider, a token string, a callable, or ``None`` (``$HANDSHAKE_SESSION``)."""
    if session is None:
        return EnvSession()
    if isinstance(session, str):
        return StaticSession(session)
    if hasattr(session, "token"):
        return session
    if callable(session):
        return CallableSession(session)
    raise TypeError("session must be a provider, a token string or a callable")
