"""Calls waiting for approval, kept by user, in memory and in the user's own files.

A restricted call that outlives one tool call ("pending approval") is kept so that
``handshake_wait`` can finish it: keyed by the session's user (``sub``) and the
transaction id, so another user's session never finds it. Besides memory, each is
written to ``<dir>/<user hash>/<transaction id>.json`` (0600, folders 0700; ``dir``
is ``pending/`` beside the agent key), so a *new process* of the same user (a
one-shot stdio host) can finish it too. The file holds what execute needs: the
tool, the params and the grant (with its single-use token, which is bound to this
user, tool and params, needs the user's session and, above the public tier, the
user's proof key). It is removed when the call is run, denied, or its approval
expired.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import time
from pathlib import Path
from typing import Any

import msgspec

from mcp_handshake.client import PendingCall
from mcp_handshake.shared.settings import make_private_dirs, write_private
from mcp_handshake.shared.wire import Grant

__all__ = ["MAX_PENDING", "PendingStore"]

log = logging.getLogger("mcp_handshake.mcp")

#: Pending calls kept in memory; the oldest go first past this.
MAX_PENDING = 1000
_TXN = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def _own_and_private(path: Path) -> bool:
    info = path.stat()
    return info.st_uid == os.getuid() and not info.st_mode & 0o077


class _Saved(msgspec.Struct, frozen=True):
    tool: str
    params: dict[str, Any]
    grant: Grant


class PendingStore:
    """Pending calls by ``(user, transaction id)``; ``directory`` ``None``: memory only."""

    def __init__(self, directory: Path | None = None) -> None:
        self._dir = directory
        self._mem: dict[tuple[str, str], PendingCall] = {}

    def _path(self, user: str, txn: str) -> Path | None:
        """The call's file, in a folder only this user can use; ``None`` (memory only) when
        there is no such folder (another owner's, or open to others: never trusted)."""
        if self._dir is None or not _TXN.fullmatch(txn):
            return None
        folder = self._dir / hashlib.sha256(user.encode()).hexdigest()[:32]
        try:
            make_private_dirs(folder)
            private = all(_own_and_private(p) for p in (self._dir, folder))
        except OSError:
            private = False
        if not private:
            log.warning("pending calls kept in memory only: %s is not private", self._dir)
            self._dir = None
            return None
        return folder / f"{txn}.json"

    def put(self, user: str, pending: PendingCall) -> None:
        now = time.time()
        for key in [k for k, p in self._mem.items() if p.grant.expires_at < now]:
            del self._mem[key]
        self._mem[(user, pending.transaction_id)] = pending
        while len(self._mem) > MAX_PENDING:
            del self._mem[next(iter(self._mem))]
        path = self._path(user, pending.transaction_id)
        if path is not None:
            saved = _Saved(pending.tool, pending.params, pending.grant)
            write_private(path, msgspec.json.encode(saved).decode())

    def get(self, user: str, txn: str) -> PendingCall | None:
        """The pending call, from memory or (another process's) file; expired ones are
        dropped."""
        pending = self._mem.get((user, txn)) or self._load(user, txn)
        if pending is not None and pending.grant.expires_at < time.time():
            self.drop(user, txn)
            return None
        return pending

    def _load(self, user: str, txn: str) -> PendingCall | None:
        path = self._path(user, txn)
        if path is None or not path.is_file():
            return None
        try:
            saved = msgspec.json.decode(path.read_bytes(), type=_Saved)
        except (OSError, msgspec.DecodeError):
            log.warning("a pending call's file is unreadable; ignored")
            return None
        if saved.grant.transaction_id != txn:
            return None
        return PendingCall(saved.tool, saved.params, saved.grant)

    def drop(self, user: str, txn: str) -> None:
        self._mem.pop((user, txn), None)
        path = self._path(user, txn)
        if path is not None:
            with contextlib.suppress(OSError):
                path.unlink()
