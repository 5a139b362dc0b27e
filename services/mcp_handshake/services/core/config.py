"""Service configuration: one TOML file, validated once at start-up.

Relative paths in the file are resolved against the file's own directory, so
a configuration directory can be moved as a whole. Secrets are never in this
file, only the paths or environment variable names where executors find them.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal

import msgspec

from mcp_handshake.services.core.policy import RateLimit

__all__ = [
    "HandshakeConfig",
    "KeysConfig",
    "PolicyDefaults",
    "SessionConfig",
    "TargetAuth",
    "TargetConfig",
    "WebhookConfig",
    "load_config",
]


class _Section(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    pass


class ServiceSection(_Section, frozen=True):
    #: Service id: the ``iss`` of receipts.
    id: str = "mcp-handshake"
    #: How long an execute worker waits for an executor before ``outcome_unknown``.
    executor_timeout_s: Annotated[float, msgspec.Meta(gt=0, le=300)] = 10.0
    #: Most requests one worker handles at once, per endpoint.
    max_inflight: Annotated[int, msgspec.Meta(ge=1, le=100_000)] = 1024


class SessionConfig(_Section, frozen=True):
    """How session JWTs from the identity provider are verified."""

    issuer: str
    audience: str
    #: Further audiences that name this mediator: the URL of each gateway's MCP endpoint
    #: (``https://gw.example/mcp``), the RFC 8707 resource an MCP host asks its
    #: authorization server for. A session for any other audience is refused.
    resources: list[str] = msgspec.field(default_factory=list)
    #: Scopes a session must carry to use a gateway's ``/mcp`` (``403 insufficient_scope``
    #: naming them otherwise); none by default.
    mcp_scopes: list[str] = msgspec.field(default_factory=list)
    #: JWKS file (path) or URL; exactly one.
    jwks_file: str | None = None
    jwks_url: str | None = None
    #: Accepted JWS algorithms. ``none`` and HMAC algorithms are never accepted.
    algorithms: list[Literal["EdDSA", "ES256", "ES384", "RS256", "PS256"]] = msgspec.field(
        default_factory=lambda: ["EdDSA", "ES256", "RS256"]
    )
    #: Clock skew tolerated on exp/nbf/iat, seconds (at most 30).
    leeway_s: Annotated[float, msgspec.Meta(ge=0, le=30)] = 10.0
    #: Session tokens longer than this are refused before parsing.
    max_token_bytes: Annotated[int, msgspec.Meta(ge=256, le=65536)] = 8192
    #: Claim holding the caller's roles (a list or a space-separated string).
    roles_claim: str = "roles"
    #: Claim holding the caller's scopes (OAuth ``scope`` string or ``scp`` list).
    scopes_claim: str = "scope"
    #: Claim holding the caller's groups (Cedar's ``principal.groups``).
    groups_claim: str = "groups"


class KeysConfig(_Section, frozen=True):
    #: Receipt signing key (execute workers).
    receipt: str = "keys/receipt.pem"
    #: Dispatch signing key (execute workers).
    dispatch: str = "keys/dispatch.pem"
    #: Public JWKS of dispatch keys (executors verify with it).
    dispatch_public: str = "keys/dispatch.jwks.json"
    #: Signing key for other internal messages (authorize workers: approval requests).
    internal: str = "keys/internal.pem"
    #: Public JWKS of internal keys (approval workers verify with it).
    internal_public: str = "keys/internal.jwks.json"
    #: Audit signing key (audit workers: checkpoints, gap records). It must lie outside
    #: the audit log's directory (the worker refuses to start otherwise): whoever can
    #: rewrite the log must not also be able to re-sign it. In production, mount it from
    #: a secret store the log's volume does not share.
    audit: str = "keys/audit.pem"
    #: Public JWKS of the audit key: all ``audit verify`` needs.
    audit_public: str = "keys/audit.jwks.json"


class TargetAuth(_Section, frozen=True):
    type: Literal["none", "api_key", "basic", "bearer", "oauth2_client_credentials"] = "none"
    #: Where an ``api_key`` goes: a header, a query param or a cookie ...
    location: Literal["header", "query", "cookie"] = "header"
    #: ... of this name.
    header: str = "X-API-Key"
    #: HTTP basic: the user name (the secret is the password).
    username: str | None = None
    #: Where the secret is: a file or an environment variable (API key, bearer
    #: token, or OAuth2 client secret).
    secret_file: str | None = None
    secret_env: str | None = None
    #: OAuth2 client credentials.
    token_url: str | None = None
    client_id: str | None = None
    scope: str | None = None


class TargetConfig(_Section, frozen=True):
    #: The API's base URL; for an upstream MCP server over HTTP, its endpoint URL.
    base_url: str = ""
    #: An upstream MCP server over stdio: the command (and its arguments) executors run.
    command: list[str] | None = None
    auth: TargetAuth = msgspec.field(default_factory=TargetAuth)
    timeout_s: Annotated[float, msgspec.Meta(gt=0, le=300)] = 5.0
    connect_timeout_s: Annotated[float, msgspec.Meta(gt=0, le=60)] = 2.0
    #: An upstream MCP server: seconds between two readings of its tool list by the
    #: executors' drift watch (besides the one at start and on ``list_changed``).
    watch_interval_s: Annotated[float, msgspec.Meta(ge=1, le=86400)] = 300.0
    #: Retries: of calls that never reached the target, and for operations safe to
    #: repeat (idempotent methods, declared Idempotency-Key POSTs) of timeouts, 5xx and 429.
    retries: Annotated[int, msgspec.Meta(ge=0, le=5)] = 1
    #: Backoff between retries: exponential from ``backoff_s``, full jitter, at most
    #: ``backoff_max_s``; a ``Retry-After`` is honoured up to ``retry_after_max_s`` (a
    #: longer one ends the retries).
    backoff_s: Annotated[float, msgspec.Meta(ge=0, le=10)] = 0.05
    backoff_max_s: Annotated[float, msgspec.Meta(ge=0, le=60)] = 1.0
    retry_after_max_s: Annotated[float, msgspec.Meta(ge=0, le=60)] = 3.0
    #: TLS: CA bundle to trust, and client certificate/key for mTLS.
    ca_file: str | None = None
    client_cert: str | None = None
    client_key: str | None = None


class WebhookConfig(_Section, frozen=True):
    """Notifications on approvals requested (waiting for humans), decided and expired."""

    url: str
    #: File holding the HMAC-SHA256 key that signs every body.
    secret_file: str
    #: ``json`` (the event as JSON) or ``slack`` (a Slack-compatible ``{"text": ...}``).
    format: Literal["json", "slack"] = "json"
    timeout_s: Annotated[float, msgspec.Meta(gt=0, le=60)] = 5.0
    #: Retries after a failed delivery, with exponential backoff and jitter.
    retries: Annotated[int, msgspec.Meta(ge=0, le=10)] = 5


class ApprovalSection(_Section, frozen=True):
    #: ``module:factory`` of a confirmation agent (default: the rule-based one).
    agent: str | None = None
    webhook: WebhookConfig | None = None


class PolicyDefaults(_Section, frozen=True):
    """``[policy]``: what applies where no permitting policy's annotation says otherwise."""

    #: Lifetime of a granted transaction token (also after approval).
    token_ttl_s: Annotated[float, msgspec.Meta(gt=0, le=600)] = 30.0
    #: How long a transaction may wait for approval; expiry counts as denial.
    approval_ttl_s: Annotated[float, msgspec.Meta(gt=0, le=86_400)] = 600.0
    approver_roles: frozenset[str] = frozenset({"approver"})
    rate_limit: RateLimit | None = None
    #: Requests one caller (session ``sub``) may have in flight at once on one
    #: endpoint of one worker process. Past it the caller gets ``rate_limited``
    #: (retryable) while other callers are served as usual, so one agent's burst
    #: cannot take the worker's capacity from everyone else. The default is one
    #: process's Redis pool, and a quarter of an endpoint's ``service.max_inflight``.
    max_inflight_per_caller: Annotated[int, msgspec.Meta(ge=1, le=100_000)] = 256
    #: Whether every human approver must sign their decision with their own key
    #: (always required of an approver whose session is bound to a key).
    signed_decisions: bool = False
    #: Seconds between checks of the policy file for changes (0: only on SIGHUP).
    watch_s: Annotated[float, msgspec.Meta(ge=0, le=3600)] = 2.0


class ToolsSection(_Section, frozen=True):
    #: Python modules each exposing ``TOOLS``: a list of tool definitions.
    modules: list[str] = msgspec.field(default_factory=list)
    #: Catalog files (YAML or JSON; docs/targets.md): tools as data, one target each.
    catalogs: list[str] = msgspec.field(default_factory=list)


class _File(_Section, frozen=True):
    session: SessionConfig
    service: ServiceSection = msgspec.field(default_factory=ServiceSection)
    tools: ToolsSection = msgspec.field(default_factory=ToolsSection)
    #: The Cedar policy set (see docs/policy.md).
    policy_file: str = "policy.cedar"
    policy: PolicyDefaults = msgspec.field(default_factory=PolicyDefaults)
    keys: KeysConfig = msgspec.field(default_factory=KeysConfig)
    targets: dict[str, TargetConfig] = msgspec.field(default_factory=dict)
    approval: ApprovalSection = msgspec.field(default_factory=ApprovalSection)


@dataclass(frozen=True, slots=True)
class HandshakeConfig:
    """The loaded configuration, with paths resolved."""

    path: Path
    service: ServiceSection
    session: SessionConfig
    tool_modules: tuple[str, ...]
    policy_file: Path
    keys: KeysConfig
    targets: dict[str, TargetConfig]
    approval_agent: str | None = None
    webhook: WebhookConfig | None = None
    policy_defaults: PolicyDefaults = field(default_factory=PolicyDefaults)
    #: Catalog files, resolved against the file's directory.
    catalogs: tuple[Path, ...] = ()

    def resolve(self, relative: str) -> Path:
        p = Path(relative)
        return p if p.is_absolute() else self.path.parent / p


def load_config(path: Path) -> HandshakeConfig:
    """Read and validate a configuration file; raises ``ValueError`` with the reason."""
    try:
        raw = tomllib.loads(path.read_text())
        data = msgspec.convert(raw, _File)
    except (OSError, tomllib.TOMLDecodeError, msgspec.ValidationError) as exc:
        raise ValueError(f"{path}: {exc}") from exc
    if (data.session.jwks_file is None) == (data.session.jwks_url is None):
        raise ValueError(f"{path}: [session] needs exactly one of jwks_file or jwks_url")
    base = path.resolve()
    policy = Path(data.policy_file)
    return HandshakeConfig(
        path=base,
        service=data.service,
        session=data.session,
        tool_modules=tuple(data.tools.modules),
        policy_file=policy if policy.is_absolute() else base.parent / policy,
        keys=data.keys,
        targets=data.targets,
        approval_agent=data.approval.agent,
        webhook=data.approval.webhook,
        policy_defaults=data.policy,
        catalogs=tuple(
            p if p.is_absolute() else base.parent / p for p in map(Path, data.tools.catalogs)
        ),
    )
