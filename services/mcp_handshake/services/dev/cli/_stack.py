"""``mcp-handshake up``: the embedded dev stack in the foreground."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
from collections.abc import Callable, Sequence
from pathlib import Path

from rich.console import Console

from mcp_handshake.services.catalog import CatalogError, load_catalog
from mcp_handshake.services.dev.cli._common import fail
from mcp_handshake.services.dev.devstack import Stack, StackSpec
from mcp_handshake.shared.natsconn import redact
from mcp_handshake.shared.settings import Settings

console = Console()


def make_stack(settings: Settings, spec: StackSpec, catalogs: Sequence[Path] = ()) -> Stack:
    """A stack in the settings' home, on given servers when both URLs are set, its
    workers loading ``catalogs`` beside the demo's tools."""
    edit = with_catalogs(catalogs)
    if settings.external_servers:
        return Stack(settings.home.resolve(), spec, settings.nats_url, settings.redis_url,
                     config_edit=edit)  # fmt: skip
    return Stack(settings.home.resolve(), spec, config_edit=edit)


def with_catalogs(catalogs: Sequence[Path]) -> Callable[[str], str] | None:
    """The edit of the stack's handshake.toml that names ``catalogs`` (checked first:
    a catalog that does not load stops ``up`` before anything starts)."""
    if not catalogs:
        return None
    paths = [p.resolve() for p in catalogs]
    for path in paths:
        load_catalog(path)
    listed = ", ".join(json.dumps(str(p)) for p in paths)
    return lambda text: text.replace("[tools]\n", f"[tools]\ncatalogs = [{listed}]\n", 1)


def run_up(
    authorize: int, execute: int, executor: int, approval: int, catalogs: Sequence[Path] = ()
) -> None:
    settings = Settings.from_env()
    spec = StackSpec(authorize, execute, executor, approval, gateway=1)
    try:
        stack = make_stack(settings, spec, catalogs)
    except CatalogError as exc:
        fail("invalid_catalog", str(exc), 2)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stack.start()
        console_url = stack.start_console()
        console.print("[bold green]mcp-handshake is up[/bold green]")
        console.print(
            f"  NATS         {redact(stack.nats_url or '')}  (authorization on; "
            f"identities in {stack.identities.root})"
        )
        console.print(f"  Redis        {redact(stack.redis_url or '')}  (password on)")
        console.print(f"  demo target  {stack.target_url}")
        console.print(f"  HTTP gateway {stack.gateway_url}  (API docs at /docs)")
        console.print(f"  home         {stack.home}  (logs in {stack.logs})")
        for path in catalogs:
            console.print(f"  catalog      {path}  (grant its tools in {stack.home}/policy.toml)")
        console.print(f"  web console  {console_url}  (dev login: approvers, auditors)")
        console.print(
            "  try: [cyan]export HANDSHAKE_SESSION=$(mcp-handshake token mint --sub alice "
            "--role billing --bind-key)[/cyan]\n"
            "       [cyan]mcp-handshake call payments.list_invoices[/cyan]"
        )
        console.print("Ctrl-C stops everything.")
        await stop.wait()

    try:
        asyncio.run(main())
    finally:
        with contextlib.suppress(Exception):
            console.print("stopping...")
        stack.stop()
