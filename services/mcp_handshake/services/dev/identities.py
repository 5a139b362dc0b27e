"""NATS identities under ``HANDSHAKE_HOME``: one password file each, one generated config.

``<home>/nats/secrets/<name>`` holds an identity's password (0600, in a 0700
folder); ``<home>/nats/identities.json`` its role and the bcrypt hash that
goes into the server's configuration, so the configuration never holds a
password. Adding an identity rewrites the configuration; a running
``nats-server`` picks it up on reload (SIGHUP).
"""

from __future__ import annotations

import json
import secrets
from pathlib import Path

import bcrypt

from mcp_handshake.services.dev.permissions import (
    CONSOLE,
    OPERATOR,
    WORKER_KINDS,
    Identity,
    render,
)
from mcp_handshake.shared.settings import write_private
from mcp_handshake.shared.subjects import Subjects

__all__ = ["DEFAULT_AGENT", "Identities"]

#: The agent identity the dev stack creates for the CLI and local agents.
DEFAULT_AGENT = "agent"


class Identities:
    def __init__(self, home: Path) -> None:
        self.root = home / "nats"
        self._index = self.root / "identities.json"

    def secret_file(self, name: str) -> Path:
        return self.root / "secrets" / name

    @property
    def config_file(self) -> Path:
        return self.root / "nats.conf"

    def _load(self) -> dict[str, dict[str, str]]:
        if not self._index.is_file():
            return {}
        data: dict[str, dict[str, str]] = json.loads(self._index.read_text())
        return data

    def ensure(self, name: str, role: str) -> Path:
        """The identity's password file, created (with its hash) when missing."""
        Identity(name, role, "")  # validates name and role
        index = self._load()
        secret = self.secret_file(name)
        entry = index.get(name)
        if entry is not None and secret.is_file():
            if entry["role"] != role:
                raise ValueError(f"identity {name!r} exists with role {entry['role']!r}")
            return secret
        password = secrets.token_urlsafe(24)
        write_private(secret, password)
        hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=10)).decode()
        index[name] = {"role": role, "hash": hashed}
        write_private(self._index, json.dumps(index, indent=2, sort_keys=True))
        return secret

    def ensure_defaults(self) -> None:
        """One user per worker kind, the operator, the console, and the default agent."""
        for kind in WORKER_KINDS:
            self.ensure(kind, kind)
        self.ensure(OPERATOR, OPERATOR)
        self.ensure(CONSOLE, CONSOLE)
        self.ensure(DEFAULT_AGENT, "agent")

    def all(self) -> list[Identity]:
        return [Identity(n, e["role"], e["hash"]) for n, e in sorted(self._load().items())]

    def write_config(self, listen: str, subjects: Subjects) -> Path:
        """The nats-server configuration for every identity known here (0600)."""
        text = render(self.all(), subjects, listen=listen, store_dir=str(self.root / "jetstream"))
        write_private(self.config_file, text)
        return self.config_file
