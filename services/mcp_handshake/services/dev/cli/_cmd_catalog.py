"""``catalog``: import tools from an OpenAPI spec, lint catalogs, compare two of them."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from mcp_handshake.services.catalog import CatalogError
from mcp_handshake.services.catalog.lint import diff_catalogs, lint_catalog
from mcp_handshake.services.dev.cli._common import console, fail

catalog_app = typer.Typer(no_args_is_help=True, help="Tool catalogs: tools as data.")
import_app = typer.Typer(no_args_is_help=True, help="Write a catalog from an upstream definition.")
catalog_app.add_typer(import_app, name="import")

TargetOpt = Annotated[str, typer.Option("--target", help="The target's name in handshake.toml.")]
OutOpt = Annotated[Path, typer.Option("--out", help="The catalog file to write.")]


@import_app.command("openapi")
def import_openapi_cmd(
    spec: Annotated[str, typer.Argument(help="OpenAPI 3.0/3.1 or Swagger 2.0: a file or URL.")],
    target: TargetOpt,
    out: OutOpt,
    base_url: Annotated[str | None, typer.Option(help="The API's base URL.")] = None,
    include: Annotated[
        list[str] | None, typer.Option(help="Only operations with this tag or operationId.")
    ] = None,
    exclude: Annotated[
        list[str] | None, typer.Option(help="Leave out operations with this tag or operationId.")
    ] = None,
) -> None:
    """Map each operation of an OpenAPI spec to a tool (tiers and effect fields suggested:
    review them), and list every operation it could not map, with the reason."""
    from mcp_handshake.services.catalog.openapi import dump_catalog, import_openapi

    try:
        file = import_openapi(spec, target, base_url, include or (), exclude or ())
    except CatalogError as exc:
        fail("invalid_spec", str(exc), 2)
    out.write_text(dump_catalog(file), encoding="utf-8")
    console.print(
        f"{out}: {len(file.tools)} tools, {len(file.unmapped)} operations not mapped",
        soft_wrap=True,
    )
    for entry in file.unmapped:
        console.print(
            f"  not mapped: {entry.operation}: {entry.reason}", highlight=False, soft_wrap=True
        )


@import_app.command("mcp")
def import_mcp_cmd(
    target: TargetOpt,
    out: OutOpt,
    url: Annotated[str | None, typer.Option(help="A streamable HTTP MCP endpoint.")] = None,
    command: Annotated[
        str | None, typer.Option(help='A stdio MCP server: "CMD ARGS..." (executors run it).')
    ] = None,
    bearer_env: Annotated[
        str | None, typer.Option(help="An environment variable holding a token for --url.")
    ] = None,
) -> None:
    """Map each tool an upstream MCP server lists to a catalog tool, pinned (tiers and
    effect fields suggested from its annotations: review them)."""
    from mcp_handshake.services.catalog.mcp_import import import_mcp
    from mcp_handshake.services.catalog.openapi import dump_catalog

    bearer = os.environ.get(bearer_env) if bearer_env else None
    if bearer_env and not bearer:
        fail("usage", f"{bearer_env} is not set", 2)
    try:
        file = import_mcp(target, url=url, command=command, bearer=bearer)
    except CatalogError as exc:
        fail("invalid_upstream", str(exc), 2)
    out.write_text(dump_catalog(file), encoding="utf-8")
    console.print(
        f"{out}: {len(file.tools)} tools, {len(file.unmapped)} not mapped", soft_wrap=True
    )
    for entry in file.unmapped:
        console.print(f"  not mapped: {entry.operation}: {entry.reason}", soft_wrap=True)


@catalog_app.command("lint")
def lint(files: Annotated[list[Path], typer.Argument(help="Catalog files.")]) -> None:
    """Check catalogs: schemas, names, masks, effect fields, and tiers that look unsafe.
    Exits 2 when a catalog does not load, 1 when there are warnings."""
    warned = False
    for path in files:
        try:
            warnings = lint_catalog(path)
        except (CatalogError, ValueError) as exc:
            fail("invalid_catalog", str(exc), 2)
        for w in warnings:
            console.print(f"{path}: {w}", highlight=False, soft_wrap=True)
        warned = warned or any(not w.startswith("unmapped ") for w in warnings)
        console.print(
            f"{path}: ok" if not warnings else f"{path}: {len(warnings)} warnings", soft_wrap=True
        )
    raise typer.Exit(1 if warned else 0)


@catalog_app.command("diff")
def diff(
    old: Annotated[Path, typer.Argument(help="The catalog as reviewed.")],
    new: Annotated[Path, typer.Argument(help="The catalog as imported again.")],
) -> None:
    """What changed between two catalogs, tool by tool. Exits 1 if anything did."""
    try:
        lines = diff_catalogs(old, new)
    except (OSError, ValueError) as exc:
        fail("invalid_catalog", str(exc), 2)
    for line in lines:
        console.print(line, highlight=False, markup=False, soft_wrap=True)
    raise typer.Exit(1 if lines else 0)
