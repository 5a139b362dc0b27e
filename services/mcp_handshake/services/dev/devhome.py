"""The dev home: local keys, secrets and configuration under ``HANDSHAKE_HOME``.

``mcp-handshake up`` and the tests create it; ``token mint`` issues session
JWTs from its dev identity provider key, which the workers started from the
same home trust. Production deployments bring their own IdP, keys and config.

Signing keys and secrets live here, in 0700 directories; an agent's proof key
never does (it is a user file, ``Settings.agent_key``).
"""

from __future__ import annotations

import json
import secrets
import time
import uuid
from importlib import resources
from pathlib import Path
from typing import Any

import jwt

from mcp_handshake.services.core.config import load_config
from mcp_handshake.shared.keys import (
    load_or_create_private_key,
    load_private_key,
    public_jwk,
)
from mcp_handshake.shared.settings import make_private_dirs, write_private

__all__ = ["MAX_SESSION_TTL_S", "ensure_home", "mint_session"]

IDP_KEY = "keys/idp.pem"
#: Longest lifetime of a dev session: they are for trying things out, not for keeping.
MAX_SESSION_TTL_S = 24 * 3600


def _demo_file(name: str) -> str:
    return resources.files("mcp_handshake.services.dev.demo").joinpath(name).read_text()


def ensure_home(home: Path, target_url: str) -> Path:
    """Create what is missing (keys, API key, policy) and write the config; return its path."""
    home.mkdir(parents=True, exist_ok=True)
    for private in ("keys", "secrets"):
        make_private_dirs(home / private).chmod(0o700)  # also tightens an older home's
    keys = home / "keys"
    idp = load_or_create_private_key(home / IDP_KEY)
    (keys / "idp.jwks.json").write_text(json.dumps({"keys": [public_jwk(idp)]}, indent=2))
    load_or_create_private_key(keys / "receipt.pem")
    for name in ("dispatch", "internal", "audit"):
        key = load_or_create_private_key(keys / f"{name}.pem")
        (keys / f"{name}.jwks.json").write_text(json.dumps({"keys": [public_jwk(key)]}, indent=2))
    # The demo target's API key; the key gateways and execute workers share.
    for secret in ("payments_api_key", "gateway_key"):
        if not (home / "secrets" / secret).exists():
            write_private(home / "secrets" / secret, secrets.token_urlsafe(48))
    policy = home / "policy.cedar"
    if not policy.exists():
        policy.write_text(_demo_file("policy.cedar"))
    config = home / "handshake.toml"
    config.write_text(_demo_file("handshake.toml").replace("{target_url}", target_url))
    return config


def mint_session(
    home: Path,
    sub: str,
    *,
    roles: list[str] | None = None,
    scopes: list[str] | None = None,
    ttl_s: int = 3600,
    jkt: str | None = None,
    extra: dict[str, Any] | None = None,
) -> str:
    """A session JWT from the dev identity provider of ``home``, living ``ttl_s`` seconds
    (at most :data:`MAX_SESSION_TTL_S`)."""
    if ttl_s > MAX_SESSION_TTL_S:
        raise ValueError(f"a dev session lives at most {MAX_SESSION_TTL_S} s")
    cfg = load_config(home / "handshake.toml")
    key = load_private_key(home / IDP_KEY)
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": cfg.session.issuer,
        "aud": cfg.session.audience,
        "sub": sub,
        "iat": now,
        "nbf": now,
        "exp": now + ttl_s,
        "jti": str(uuid.uuid4()),
        "roles": roles or [],
    }
    if scopes:
        claims["scope"] = " ".join(scopes)
    if jkt:
        claims["cnf"] = {"jkt": jkt}
    claims.update(extra or {})
    return jwt.encode(claims, key, algorithm="EdDSA", headers={"kid": public_jwk(key)["kid"]})
