"""``policy``: validate, test, explain and convert the Cedar policy."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from mcp_handshake.services.dev.cli._common import fail, usage
from mcp_handshake.shared.settings import Settings

if TYPE_CHECKING:
    from mcp_handshake.services.core.tools import ToolRegistry
    from mcp_handshake.services.policy import Policy

policy_app = typer.Typer(no_args_is_help=True, help="The Cedar policy: check, test, explain.")

ConfigOpt = Annotated[
    Path | None,
    typer.Option(help="handshake.toml (default: under HANDSHAKE_HOME): tools and defaults.",
                 show_default=False),
]  # fmt: skip


def _loaded(config: Path | None, policy_file: Path | None = None) -> tuple[Policy, ToolRegistry]:
    """(policy, tools) from the configuration; a bad policy is one line and exit 1."""
    from mcp_handshake.services.catalog.registry import open_tools
    from mcp_handshake.services.core.config import load_config
    from mcp_handshake.services.policy import PolicyError, load_policy

    path = config or Settings.from_env().home / "handshake.toml"
    if not path.exists():
        usage(f"no configuration at {path}: pass --config or set HANDSHAKE_HOME")
    try:
        cfg, tools = open_tools(load_config(path))
        return load_policy(policy_file or cfg.policy_file, tools, cfg.policy_defaults), tools
    except (PolicyError, ValueError) as exc:
        fail("invalid_policy", str(exc), 1)


@policy_app.command("validate")
def validate(
    file: Annotated[Path | None, typer.Argument(help="Policy file (default: config's).")] = None,
    config: ConfigOpt = None,
) -> None:
    """Check the policy against the schema generated from the tool catalog."""
    policy, _ = _loaded(config, file)
    typer.echo(f"ok: {len(policy.current.ids)} policies, {policy.hash}")


@policy_app.command("test")
def test(
    cases: Annotated[Path, typer.Argument(help="TOML table of [[case]] requests, expectations.")],
    file: Annotated[Path | None, typer.Option(help="Policy file (default: the config's).")] = None,
    config: ConfigOpt = None,
) -> None:
    """Run each case against the policy; exit 1 if any decision differs from expected."""
    from mcp_handshake.services.policy import PolicyError
    from mcp_handshake.services.policy.cases import load_cases, run_case

    policy, tools = _loaded(config, file)
    try:
        table = load_cases(cases.read_text())
    except (OSError, PolicyError) as exc:
        usage(str(exc))
    failed = 0
    for n, case in enumerate(table, 1):
        out = run_case(policy, tools, case)
        failed += not out.passed
        mark = "ok  " if out.passed else "FAIL"
        by = ", ".join(out.policies) or "-"
        typer.echo(f"{mark} {case.name or n}: {case.user} {case.tool} -> {out.got} "
                   f"(expected {case.expect}; by {by})")  # fmt: skip
    typer.echo(f"{len(table) - failed} passed, {failed} failed")
    raise typer.Exit(1 if failed else 0)


@policy_app.command("explain")
def explain(txn: Annotated[str, typer.Argument(help="Transaction id.")]) -> None:
    """Why a transaction was allowed, escalated or refused, from the audit log."""
    from mcp_handshake.services.dev.cli._audit import audit_events
    from mcp_handshake.services.policy.explain import explain as tell

    lines = tell(e for e in audit_events(Settings.from_env()) if e.get("txn") == txn)
    if not lines:
        fail("not_found", f"no policy decision in the audit log for {txn}", 1)
    for line in lines:
        typer.echo(line)


@policy_app.command("convert")
def convert(
    toml: Annotated[Path, typer.Argument(help="An old policy.toml.")],
    config: ConfigOpt = None,
) -> None:
    """Print the Cedar policy meaning what an old policy.toml meant."""
    from mcp_handshake.services.catalog.registry import open_tools
    from mcp_handshake.services.core.config import load_config
    from mcp_handshake.services.core.tools import ToolRegistry
    from mcp_handshake.services.policy import PolicyError
    from mcp_handshake.services.policy.convert import convert_toml

    path = config or Settings.from_env().home / "handshake.toml"
    if path.exists():
        _, tools = open_tools(load_config(path))
    else:
        tools = ToolRegistry.from_modules(("mcp_handshake.services.dev.demo.tools",))
    try:
        typer.echo(convert_toml(toml.read_text(), tools), nl=False)
    except (OSError, PolicyError) as exc:
        fail("invalid_policy", str(exc), 1)
