"""``token`` and ``keys``: dev sessions and agents' proof keys."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, TypeVar

import typer

from mcp_handshake.services.dev.cli._common import fail, run_command, usage
from mcp_handshake.services.dev.devhome import MAX_SESSION_TTL_S
from mcp_handshake.shared.settings import Settings

T = TypeVar("T")

token_app = typer.Typer(no_args_is_help=True, help="Session tokens from the dev identity provider.")
keys_app = typer.Typer(no_args_is_help=True, help="Agents' proof-of-possession keys.")


@token_app.command("mint")
def token_mint(
    sub: Annotated[str, typer.Option(help="Subject (user id).")],
    role: Annotated[list[str] | None, typer.Option(help="Role (repeatable).")] = None,
    scope: Annotated[list[str] | None, typer.Option(help="OAuth scope (repeatable).")] = None,
    ttl: Annotated[
        int, typer.Option(help=f"Lifetime in seconds, at most {MAX_SESSION_TTL_S} (24 h).")
    ] = 3600,
    bind_key: Annotated[
        bool,
        typer.Option(
            help="Bind the session (cnf.jkt) to this user's agent key "
            "($HANDSHAKE_AGENT_KEY, default ~/.config/mcp-handshake/agent.pem)."
        ),
    ] = False,
    public_key: Annotated[
        Path | None,
        typer.Option(
            help="Bind the session (cnf.jkt) to this public key (PEM or JWK JSON), "
            "e.g. an agent's in another language.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Print a session JWT signed by the dev identity provider under HANDSHAKE_HOME."""
    from mcp_handshake.services.dev.cli._keys import KeyFileError, agent_key, read_public_jwk
    from mcp_handshake.services.dev.devhome import mint_session

    if not 1 <= ttl <= MAX_SESSION_TTL_S:
        usage(f"--ttl must be between 1 and {MAX_SESSION_TTL_S} seconds (24 h), not {ttl}")
    if bind_key and public_key is not None:
        usage("--bind-key and --public-key are alternatives: give one")
    settings = Settings.from_env()
    if not (settings.home / "handshake.toml").exists():
        usage(f"no dev home at {settings.home}: run 'mcp-handshake up' or set HANDSHAKE_HOME")
    jkt = None
    if public_key is not None:
        try:
            jkt = str(read_public_jwk(public_key)["kid"])
        except KeyFileError as exc:
            usage(str(exc))
    elif bind_key:
        jkt = agent_key(settings).thumbprint
    print(mint_session(settings.home, sub, roles=role, scopes=scope, ttl_s=ttl, jkt=jkt))


@keys_app.command("register")
def keys_register(
    sub: Annotated[str, typer.Option(help="The subject the key belongs to.")],
    file: Annotated[
        Path | None,
        typer.Argument(
            help="Public key: PEM (or private PEM) or JWK JSON "
            "(default: this user's agent key, created if missing).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Register an agent's public key for proofs of possession (stored by the service in
    the Redis of HANDSHAKE_HOME's stack); prints its thumbprint."""
    from mcp_handshake.services.dev.cli._keys import (
        KeyFileError,
        agent_key,
        read_public_jwk,
        register,
    )

    settings = Settings.from_env()
    try:
        jwk = read_public_jwk(file) if file else dict(agent_key(settings).public_jwk)
    except KeyFileError as exc:
        usage(str(exc))
    print(run_command(register(settings, sub, jwk)))


@keys_app.command("revoke")
def keys_revoke(
    sub: Annotated[str, typer.Option(help="The subject the key belongs to.")],
    kid: Annotated[str, typer.Argument(help="The key's thumbprint (as `register` printed).")],
) -> None:
    """Stop accepting proofs by a registered key, at once."""
    from mcp_handshake.services.dev.cli._keys import revoke

    if not run_command(revoke(Settings.from_env(), sub, kid)):
        fail("failed", "no such key for this subject", 1)
