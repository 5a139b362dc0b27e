"""``agents`` and ``nats-config``: identities on the bus and the server configuration."""

from __future__ import annotations

import json
import os
import signal
from typing import Annotated

import typer

from mcp_handshake.services.dev.cli._common import console, fail
from mcp_handshake.services.dev.identities import Identities
from mcp_handshake.services.dev.permissions import (
    CONSOLE,
    OPERATOR,
    WORKER_KINDS,
    Identity,
    render,
)
from mcp_handshake.shared.natsconn import inbox_prefix
from mcp_handshake.shared.settings import STACK_FILE, Settings

agents_app = typer.Typer(no_args_is_help=True, help="Agents' identities on the bus.")


@agents_app.command("add")
def agents_add(name: Annotated[str, typer.Argument(help="The agent's NATS user name.")]) -> None:
    """Give an agent its own NATS identity under HANDSHAKE_HOME (0600 password file).

    The agent may publish only to the agent subjects and read only its own inbox
    (_INBOX.<name>). A running dev stack reloads its server configuration at once.
    """
    settings = Settings.from_env()
    identities = Identities(settings.home)
    try:
        secret = identities.ensure(name, "agent")
    except ValueError as exc:
        fail("usage", str(exc), 2)
    stack = _running_stack(settings)
    if stack is not None:
        identities.write_config(stack["nats_listen"], settings.subjects)
        os.kill(int(stack["nats_pid"]), signal.SIGHUP)
        where = "the running dev stack reloaded its configuration"
    else:
        where = (f"server configuration: {identities.config_file} is rewritten by `up`; for "
                 "your own servers render it with `mcp-handshake nats-config`")  # fmt: skip
    console.print(f"agent {name}: {where}")
    console.print(f"  HANDSHAKE_NATS_USER={name}")
    console.print(f"  HANDSHAKE_NATS_PASSWORD_FILE={secret}")
    console.print(f"  inbox prefix {inbox_prefix(name)} (set it in any NATS client)")


def _running_stack(settings: Settings) -> dict[str, str] | None:
    path = settings.home / STACK_FILE
    try:
        stack: dict[str, str] = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return stack if stack.get("nats_pid") and stack.get("nats_listen") else None


def nats_config(
    listen: Annotated[str, typer.Option(help="host:port to listen on.")] = "0.0.0.0:4222",
    store_dir: Annotated[str, typer.Option(help="JetStream store directory.")] = "/data/jetstream",
    agent: Annotated[list[str] | None, typer.Option(help="An agent user (repeatable).")] = None,
) -> None:
    """Print a nats-server configuration from the permission model.

    Every password is read by nats-server from its environment: NATS_<USER>_PASSWORD
    (upper case, '-' as '_'), e.g. NATS_EXECUTE_PASSWORD.
    """
    names = [(k, k) for k in WORKER_KINDS] + [(OPERATOR, OPERATOR), (CONSOLE, CONSOLE)]
    names += [(a, "agent") for a in agent or ["agent"]]
    identities = [Identity(n, role, _env_name(n), from_env=True) for n, role in names]
    typer.echo(
        render(identities, Settings().subjects, listen=listen, store_dir=store_dir), nl=False
    )


def _env_name(user: str) -> str:
    return "NATS_" + user.upper().replace("-", "_") + "_PASSWORD"
