"""Start-up pieces several worker kinds share: config, policy, tools, sessions, Redis."""

from __future__ import annotations

from dataclasses import dataclass

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from mcp_handshake.services.core.config import HandshakeConfig, load_config
from mcp_handshake.services.core.policy import Policy, load_policy
from mcp_handshake.services.core.sessions import SessionVerifier
from mcp_handshake.services.core.tools import ToolRegistry
from mcp_handshake.shared.settings import Settings

__all__ = [
    "VERSION",
    "Common",
    "duplicate_window",
    "load_common",
    "load_sessions",
    "redis_client",
]

VERSION = "0.1.0"


@dataclass(frozen=True, slots=True)
class Common:
    settings: Settings
    config: HandshakeConfig
    policy: Policy
    tools: ToolRegistry


def load_common(settings: Settings) -> Common:
    config = load_config(settings.config_path)
    return Common(
        settings=settings,
        config=config,
        policy=load_policy(config.policy_file),
        tools=ToolRegistry.from_modules(config.tool_modules),
    )


async def load_sessions(common: Common) -> SessionVerifier:
    return await SessionVerifier.create(common.config.session, common.config.path.parent)


def duplicate_window(policy: Policy) -> float:
    """The audit stream's duplicate window: longer than any transaction can stay usable,
    so a replayed execute intent is always recognized."""
    return policy.max_lifetime_s + 300


def redis_client(settings: Settings) -> Redis:
    """A Redis client that fails fast: a dead store must become ``unavailable`` in well
    under 2 s, and the pool reconnects by itself when the store is back."""
    return Redis.from_url(
        settings.redis_url,
        socket_timeout=1.0,
        socket_connect_timeout=0.5,
        # One immediate retry: a pooled connection broken by a Redis restart is replaced
        # at once. Safe for every script we run (a re-run consume finds the token gone).
        retry=Retry(NoBackoff(), 1),
        max_connections=256,
        health_check_interval=0,
    )
