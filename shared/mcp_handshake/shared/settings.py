"""Settings shared by every process, read from the environment in one place.

Library code never reads environment variables; entry points call
:meth:`Settings.from_env` once and pass the result down.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from .subjects import DEFAULT_INTERNAL_PREFIX, DEFAULT_PREFIX, Subjects

__all__ = ["STACK_FILE", "Settings", "default_agent_key", "make_private_dirs"]

#: Written under ``HANDSHAKE_HOME`` by ``mcp-handshake up`` so other commands find the stack.
STACK_FILE = "stack.json"

_DEFAULT_NATS = "nats://127.0.0.1:4222"
_DEFAULT_REDIS = "redis://127.0.0.1:6379/0"


@dataclass(frozen=True, slots=True)
class Settings:
    """Where things are. Every field has a safe local default."""

    #: NATS server URL(s), comma separated.
    nats_url: str = _DEFAULT_NATS
    #: Redis URL for the token store (services only).
    redis_url: str = _DEFAULT_REDIS
    #: State directory: dev keys, generated config, logs, audit log.
    home: Path = field(default_factory=lambda: Path(".handshake"))
    #: Service configuration file (TOML); default ``<home>/handshake.toml``.
    config_file: Path | None = None
    #: Agent-facing subject prefix.
    subject_prefix: str = DEFAULT_PREFIX
    #: Service-only subject prefix.
    internal_prefix: str = DEFAULT_INTERNAL_PREFIX
    #: Largest request body accepted, in bytes.
    max_payload: int = 64 * 1024
    #: ``text`` or ``json`` log lines.
    log_format: str = "text"
    #: Log level name.
    log_level: str = "INFO"
    #: Whether NATS/Redis URLs were given explicitly (``up`` then uses them).
    external_servers: bool = False
    #: OpenTelemetry exporters: ``none``, ``console`` or ``otlp`` (standard OTEL_* variables).
    traces_exporter: str = "none"
    metrics_exporter: str = "none"
    #: NATS user this process connects as (its inbox prefix is ``_INBOX.<user>``).
    nats_user: str | None = None
    #: File holding that user's password (``HANDSHAKE_NATS_PASSWORD_FILE``), or the
    #: password itself (``HANDSHAKE_NATS_PASSWORD``).
    nats_password_file: Path | None = None
    nats_password_value: str | None = field(default=None, repr=False)
    #: The operator identity's password file (``status``, ``audit tail``), when known:
    #: ``HANDSHAKE_OPERATOR_PASSWORD_FILE`` or the running dev stack's.
    operator_password_file: Path | None = None

    def as_operator(self) -> Settings:
        """These settings as the ``operator`` NATS identity, where one is configured."""
        if self.operator_password_file is None:
            return self
        return replace(self, nats_user="operator", nats_password_file=self.operator_password_file,
                       nats_password_value=None)  # fmt: skip

    def nats_password(self) -> str | None:
        """The NATS password, read from its file at the moment it is needed."""
        if self.nats_password_value is not None:
            return self.nats_password_value
        if self.nats_password_file is not None:
            return self.nats_password_file.read_text().strip()
        return None

    #: The agent's proof-of-possession key (CLI and ``HandshakeClient.from_env``): a user
    #: file, kept apart from the dev identity provider's signing keys under ``home``.
    #: ``from_env`` always sets it (see :func:`default_agent_key`); ``None`` means unset.
    agent_key: Path | None = None

    @property
    def subjects(self) -> Subjects:
        return Subjects(self.subject_prefix, self.internal_prefix)

    @property
    def config_path(self) -> Path:
        return self.config_file or self.home / "handshake.toml"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read ``HANDSHAKE_*`` variables; fall back to a running dev stack's file."""
        env = os.environ if environ is None else environ
        home = Path(env.get("HANDSHAKE_HOME", ".handshake"))
        stack: dict[str, str] = {}
        stack_file = home / STACK_FILE
        if stack_file.is_file():
            try:
                stack = json.loads(stack_file.read_text())
            except (OSError, ValueError):
                stack = {}
        nats_env = env.get("HANDSHAKE_NATS_URL")
        user = env.get("HANDSHAKE_NATS_USER") or (None if nats_env else stack.get("nats_user"))
        password_file = env.get("HANDSHAKE_NATS_PASSWORD_FILE") or (
            None if nats_env or env.get("HANDSHAKE_NATS_USER") else stack.get("nats_password_file")
        )
        operator = env.get("HANDSHAKE_OPERATOR_PASSWORD_FILE") or stack.get(
            "operator_password_file"
        )
        redis_env = env.get("HANDSHAKE_REDIS_URL")
        config = env.get("HANDSHAKE_CONFIG")
        return cls(
            nats_url=nats_env or stack.get("nats_url") or _DEFAULT_NATS,
            redis_url=redis_env or stack.get("redis_url") or _DEFAULT_REDIS,
            home=home,
            config_file=Path(config) if config else None,
            subject_prefix=env.get("HANDSHAKE_SUBJECT_PREFIX", DEFAULT_PREFIX),
            internal_prefix=env.get("HANDSHAKE_INTERNAL_PREFIX", DEFAULT_INTERNAL_PREFIX),
            max_payload=int(env.get("HANDSHAKE_MAX_PAYLOAD", str(64 * 1024))),
            log_format=env.get("HANDSHAKE_LOG_FORMAT", "text"),
            log_level=env.get("HANDSHAKE_LOG_LEVEL", "INFO").upper(),
            external_servers=bool(nats_env and redis_env),
            traces_exporter=env.get("OTEL_TRACES_EXPORTER", "none").lower(),
            metrics_exporter=env.get("OTEL_METRICS_EXPORTER", "none").lower(),
            nats_user=user or None,
            nats_password_file=Path(password_file) if password_file else None,
            nats_password_value=env.get("HANDSHAKE_NATS_PASSWORD"),
            operator_password_file=Path(operator) if operator else None,
            agent_key=default_agent_key(env),
        )

    def with_(self, **changes: object) -> Settings:
        return replace(self, **changes)  # type: ignore[arg-type]


def default_agent_key(env: Mapping[str, str]) -> Path:
    """Where the agent's proof key lives, whatever the current directory:
    ``$HANDSHAKE_AGENT_KEY``, else ``$XDG_CONFIG_HOME/mcp-handshake/agent.pem``, else
    ``~/.config/mcp-handshake/agent.pem``. Relative paths are resolved once, here."""
    home = Path(env["HOME"]) if env.get("HOME") else Path.home()
    override = env.get("HANDSHAKE_AGENT_KEY")
    if override:
        path = home / override[2:] if override.startswith("~/") else Path(override)
        return path.absolute()
    xdg = env.get("XDG_CONFIG_HOME", "")
    # The XDG spec: a relative XDG_CONFIG_HOME is invalid and is ignored.
    config = Path(xdg) if xdg and Path(xdg).is_absolute() else home / ".config"
    return config / "mcp-handshake" / "agent.pem"


def make_private_dirs(path: Path) -> Path:
    """Create ``path`` and its missing parents readable by their owner only (0700);
    directories that already exist are left as they are. Returns ``path``."""
    missing = [p for p in (path, *path.parents) if not p.exists()]
    for directory in reversed(missing):
        directory.mkdir(mode=0o700, exist_ok=True)
        directory.chmod(0o700)  # mkdir's mode is narrowed by the umask, never widened
    return path
