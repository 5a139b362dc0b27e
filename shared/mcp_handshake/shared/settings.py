"""Settings shared by every process, read from the environment in one place.

Library code never reads environment variables; entry points call
:meth:`Settings.from_env` once and pass the result down.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from .subjects import DEFAULT_INTERNAL_PREFIX, DEFAULT_PREFIX, Subjects

__all__ = ["STACK_FILE", "Settings", "default_agent_key", "make_private_dirs", "write_private"]

#: Written under ``HANDSHAKE_HOME`` by ``mcp-handshake up`` so other commands find the stack.
STACK_FILE = "stack.json"

_DEFAULT_NATS = "nats://127.0.0.1:4222"
_DEFAULT_REDIS = "redis://127.0.0.1:6379/0"


@dataclass(frozen=True, slots=True)
class Settings:
    """Where things are. Every field has a safe local default."""

    #: NATS server URL(s), comma separated.
    nats_url: str = _DEFAULT_NATS
    #: Redis URL(s) for the token store (services only); it may hold a password, so it is
    #: left out of ``repr`` (print ``natsconn.redact(redis_url)``).
    redis_url: str = field(default=_DEFAULT_REDIS, repr=False)
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
    #: Most operations one batch request may carry (``shared.batch``).
    max_batch: int = 256
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
    #: NATS TLS: the CA that signed the servers' certificates (``HANDSHAKE_NATS_TLS_CA``),
    #: and a client certificate and key where the servers ask for one
    #: (``HANDSHAKE_NATS_TLS_CERT``, ``HANDSHAKE_NATS_TLS_KEY``).
    nats_tls_ca: Path | None = None
    nats_tls_cert: Path | None = None
    nats_tls_key: Path | None = None
    #: A NATS ``.creds`` file (user JWT and nkey seed; ``HANDSHAKE_NATS_CREDS``).
    nats_creds: Path | None = None
    #: A file holding an nkey seed (``HANDSHAKE_NATS_NKEY_SEED``).
    nats_nkey_seed: Path | None = None
    #: A NATS authentication token (``HANDSHAKE_NATS_TOKEN``).
    nats_token: str | None = field(default=None, repr=False)
    #: Replicas of the JetStream streams the audit worker creates
    #: (``HANDSHAKE_STREAM_REPLICAS``; 3 on a three-node cluster). Existing streams are
    #: never changed.
    stream_replicas: int = 1
    #: Port of a worker's ``/healthz``, ``/readyz`` and ``/metrics`` (``HANDSHAKE_HEALTH_PORT``;
    #: ``None``: not served) and the address it listens on (``HANDSHAKE_HEALTH_HOST``).
    health_port: int | None = None
    health_host: str = "127.0.0.1"
    #: Audit events a worker keeps while the stream does not ack them
    #: (``HANDSHAKE_AUDIT_OUTBOX``); when full its endpoints answer ``unavailable``.
    audit_outbox_limit: int = 10_000
    #: Redis topology (``HANDSHAKE_REDIS_MODE``): ``standalone`` (``redis_url``),
    #: ``sentinel`` (the master ``redis_sentinel_master`` found through
    #: ``redis_sentinels``; ``redis_url`` then gives only scheme, credentials and db) or
    #: ``cluster`` (Redis Cluster; ``redis_url`` lists startup nodes, comma separated).
    redis_mode: str = "standalone"
    #: Redis TLS (a ``rediss://`` URL): the CA that signed the servers' certificates
    #: (``HANDSHAKE_REDIS_TLS_CA``), and a client certificate and key where the servers
    #: ask for one (``HANDSHAKE_REDIS_TLS_CERT``, ``HANDSHAKE_REDIS_TLS_KEY``).
    redis_tls_ca: Path | None = None
    redis_tls_cert: Path | None = None
    redis_tls_key: Path | None = None
    #: Redis ACL user (``HANDSHAKE_REDIS_USERNAME``) and its password's file
    #: (``HANDSHAKE_REDIS_PASSWORD_FILE``) or value (``HANDSHAKE_REDIS_PASSWORD``); they
    #: override credentials in the URL.
    redis_username: str | None = None
    redis_password_file: Path | None = None
    redis_password_value: str | None = field(default=None, repr=False)
    #: Sentinel: the master's name (``HANDSHAKE_REDIS_SENTINEL_MASTER``), the sentinels
    #: (``HANDSHAKE_REDIS_SENTINELS``, ``host:port`` comma separated) and, where the
    #: sentinels require it, their own user and password file
    #: (``HANDSHAKE_REDIS_SENTINEL_USERNAME``, ``HANDSHAKE_REDIS_SENTINEL_PASSWORD_FILE``).
    redis_sentinel_master: str | None = None
    redis_sentinels: tuple[str, ...] = ()
    redis_sentinel_username: str | None = None
    redis_sentinel_password_file: Path | None = None
    #: When an execute worker records the execute intent (``HANDSHAKE_EXECUTE_INTENT``):
    #: ``concurrent`` (default) with the consume for tiers without approval (one
    #: JetStream round trip less per execute; a raced token still runs exactly once, see
    #: ``execute/gate.py``), or ``after_consume``. See docs/decisions.md.
    execute_intent: str = "concurrent"
    #: How long a worker keeps retrying its start-up (JetStream streams, buckets and
    #: consumers) while the bus answers with a timeout or "unavailable", as a cluster that
    #: is still electing leaders does (``HANDSHAKE_STARTUP_TIMEOUT_S``); then it exits
    #: with one line saying what it gave up on.
    startup_timeout_s: float = 60.0
    #: The key gateways and execute workers share (``HANDSHAKE_GATEWAY_KEY_FILE``): the
    #: gateway tags the DPoP ``htu`` it forwards with it, and execute honours no other.
    gateway_key_file: Path | None = None
    #: DPoP server nonces (``HANDSHAKE_GATEWAY_DPOP_NONCE_KEY_FILE``), enforced by both.
    dpop_nonce_key_file: Path | None = None

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

    def redis_password(self) -> str | None:
        """The Redis password, read from its file at the moment it is needed."""
        if self.redis_password_value is not None:
            return self.redis_password_value
        if self.redis_password_file is not None:
            return self.redis_password_file.read_text().strip()
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

        def path(name: str) -> Path | None:
            value = env.get(name)
            return Path(value) if value else None

        replicas = int(env.get("HANDSHAKE_STREAM_REPLICAS", "1"))
        if not 1 <= replicas <= 5:
            raise ValueError("HANDSHAKE_STREAM_REPLICAS must be between 1 and 5")
        health_port = env.get("HANDSHAKE_HEALTH_PORT")
        execute_intent = env.get("HANDSHAKE_EXECUTE_INTENT", "concurrent")
        if execute_intent not in ("after_consume", "concurrent"):
            raise ValueError("HANDSHAKE_EXECUTE_INTENT must be after_consume or concurrent")
        return cls(
            nats_url=nats_env or stack.get("nats_url") or _DEFAULT_NATS,
            redis_url=redis_env or stack.get("redis_url") or _DEFAULT_REDIS,
            home=home,
            config_file=Path(config) if config else None,
            subject_prefix=env.get("HANDSHAKE_SUBJECT_PREFIX", DEFAULT_PREFIX),
            internal_prefix=env.get("HANDSHAKE_INTERNAL_PREFIX", DEFAULT_INTERNAL_PREFIX),
            max_payload=int(env.get("HANDSHAKE_MAX_PAYLOAD", str(64 * 1024))),
            max_batch=int(env.get("HANDSHAKE_MAX_BATCH", "256")),
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
            nats_tls_ca=path("HANDSHAKE_NATS_TLS_CA"),
            nats_tls_cert=path("HANDSHAKE_NATS_TLS_CERT"),
            nats_tls_key=path("HANDSHAKE_NATS_TLS_KEY"),
            nats_creds=path("HANDSHAKE_NATS_CREDS"),
            nats_nkey_seed=path("HANDSHAKE_NATS_NKEY_SEED"),
            nats_token=env.get("HANDSHAKE_NATS_TOKEN") or None,
            stream_replicas=replicas,
            health_port=int(health_port) if health_port else None,
            health_host=env.get("HANDSHAKE_HEALTH_HOST", "127.0.0.1"),
            audit_outbox_limit=int(env.get("HANDSHAKE_AUDIT_OUTBOX", "10000")),
            **_redis_env(env, path),
            execute_intent=execute_intent,
            startup_timeout_s=float(env.get("HANDSHAKE_STARTUP_TIMEOUT_S", "60")),
            gateway_key_file=path("HANDSHAKE_GATEWAY_KEY_FILE"),
            dpop_nonce_key_file=path("HANDSHAKE_GATEWAY_DPOP_NONCE_KEY_FILE"),
        )

    def with_(self, **changes: object) -> Settings:
        return replace(self, **changes)  # type: ignore[arg-type]


_REDIS_MODES = ("standalone", "sentinel", "cluster")


def _redis_env(env: Mapping[str, str], path: Callable[[str], Path | None]) -> dict[str, Any]:
    """The Redis topology, TLS and ACL settings from ``HANDSHAKE_REDIS_*``."""
    sentinels = tuple(s.strip() for s in env.get("HANDSHAKE_REDIS_SENTINELS", "").split(",")
                      if s.strip())  # fmt: skip
    master = env.get("HANDSHAKE_REDIS_SENTINEL_MASTER") or None
    mode = env.get("HANDSHAKE_REDIS_MODE", "sentinel" if master else "standalone").lower()
    if mode not in _REDIS_MODES:
        raise ValueError(f"HANDSHAKE_REDIS_MODE must be one of {', '.join(_REDIS_MODES)}")
    if mode == "sentinel" and not (master and sentinels):
        raise ValueError("Redis sentinel mode needs HANDSHAKE_REDIS_SENTINEL_MASTER "
                         "and HANDSHAKE_REDIS_SENTINELS")  # fmt: skip
    return {
        "redis_mode": mode,
        "redis_tls_ca": path("HANDSHAKE_REDIS_TLS_CA"),
        "redis_tls_cert": path("HANDSHAKE_REDIS_TLS_CERT"),
        "redis_tls_key": path("HANDSHAKE_REDIS_TLS_KEY"),
        "redis_username": env.get("HANDSHAKE_REDIS_USERNAME") or None,
        "redis_password_file": path("HANDSHAKE_REDIS_PASSWORD_FILE"),
        "redis_password_value": env.get("HANDSHAKE_REDIS_PASSWORD") or None,
        "redis_sentinel_master": master,
        "redis_sentinels": sentinels,
        "redis_sentinel_username": env.get("HANDSHAKE_REDIS_SENTINEL_USERNAME") or None,
        "redis_sentinel_password_file": path("HANDSHAKE_REDIS_SENTINEL_PASSWORD_FILE"),
    }


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


def write_private(path: Path, text: str) -> None:
    """Write a secret: the file 0600 (created so, never briefly wider), its missing
    folders 0700."""
    make_private_dirs(path.parent)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
