"""Tool catalogs: tools as data load into the same tool objects as Python tools."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import web

from mcp_handshake.services.catalog import CatalogError, load_catalog, open_tools
from mcp_handshake.services.core.config import TargetConfig, load_config
from mcp_handshake.services.dev.demo.tools import TOOLS
from mcp_handshake.services.executor.targets import TargetClient
from mcp_handshake.shared.errors import InvalidParams

ROOT = Path(__file__).resolve().parent.parent
VECTORS = json.loads((ROOT / "docs/vectors/params.json").read_text())


def _catalog(tmp_path: Path, *tools: dict[str, Any], **top: Any) -> Path:
    doc = {"catalog": 1, "target": {"name": "crm"}, "tools": list(tools), **top}
    path = tmp_path / "crm.catalog.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def _tool(**kw: Any) -> dict[str, Any]:
    tool: dict[str, Any] = {
        "name": "crm.get_contact",
        "description": "Read a contact.",
        "tier": "internal",
        "params": {"type": "object", "properties": {"id": {"type": "string"}},
                   "required": ["id"]},
        "http": {"method": "GET", "path": "/contacts/{id}"},
    }  # fmt: skip
    tool.update(kw)
    return tool


def test_the_demo_catalog_publishes_the_vectors_schemas() -> None:
    published = {t.name: t.params_schema() for t in TOOLS}
    assert published == VECTORS["schemas"]


def test_optional_params_default_to_null_and_types_are_not_coerced(tmp_path: Path) -> None:
    params = {"type": "object", "required": ["n"], "properties": {
        "n": {"type": "integer", "minimum": 1},
        "tag": {"type": "string", "maxLength": 3},
        "flag": {"type": "boolean", "default": False},
        "kind": {"enum": ["a", "b"]},
    }}  # fmt: skip
    tool = load_catalog(_catalog(tmp_path, _tool(params=params, http={
        "method": "GET", "path": "/x"}))).tools[0]  # fmt: skip
    assert tool.normalize({"n": 5.0}) == {"n": 5, "tag": None, "flag": False, "kind": None}
    assert tool.params_schema()["properties"]["tag"] == {
        "anyOf": [{"type": "string", "maxLength": 3}, {"type": "null"}],
        "default": None,
    }
    for bad in ({"n": "5"}, {"n": True}, {"n": 0}, {"n": 1.5}, {"n": 1, "tag": "long"},
                {"n": 1, "flag": 1}, {"n": 1, "kind": "c"}, {"n": 1, "other": 1}, {}):  # fmt: skip
        with pytest.raises(InvalidParams):
            tool.normalize(bad)


def test_other_schemas_are_judged_by_jsonschema(tmp_path: Path) -> None:
    params = {"type": "object", "required": ["address"], "properties": {
        "address": {"type": "object", "additionalProperties": False,
                    "required": ["city"], "properties": {"city": {"type": "string"}}},
        "contact": {"oneOf": [{"type": "string", "format": "email"},
                              {"type": "integer"}]},
    }}  # fmt: skip
    tool = load_catalog(_catalog(tmp_path, _tool(params=params, http={
        "method": "POST", "path": "/x"}))).tools[0]  # fmt: skip
    assert tool.normalize({"address": {"city": "Oslo"}, "contact": 7}) == {
        "address": {"city": "Oslo"},
        "contact": 7,
    }
    for bad in ({"address": {"city": 1}}, {"address": {"city": "a", "zip": "1"}},
                {"address": {"city": "a"}, "contact": 1.5}):  # fmt: skip
        with pytest.raises(InvalidParams):
            tool.normalize(bad)


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"tier": "secret"}, "Invalid enum value 'secret' - at `$.tools[0].tier`"),
        ({"colour": "red"}, "unknown field `colour`"),
        ({"name": "bad name"}, "Expected `str` matching regex"),
        ({"params": {"type": "string"}}, "type object"),
        ({"params": {"type": "object", "additionalProperties": True}}, "unknown params"),
        (
            {"params": {"type": "object", "properties": {"id": {"type": "strng"}}}},
            "not a valid JSON Schema",
        ),
        ({"http": {"method": "GET", "path": "/c/{cid}"}}, "{cid} is no path param"),
        ({"effect": ["amount"]}, "'amount' is no param"),
        (
            {"http": {"method": "GET", "path": "/c", "params": {"x": {"in": "query"}}}},
            "names no param: x",
        ),
        ({"http": None}, "exactly one operation"),
    ],
)
def test_a_faulty_catalog_is_refused_with_its_reason(
    tmp_path: Path, change: dict[str, Any], reason: str
) -> None:
    with pytest.raises(CatalogError, match=re.escape(reason)):
        load_catalog(_catalog(tmp_path, _tool(**change)))


def test_a_catalog_holds_no_secret(tmp_path: Path) -> None:
    target = {"name": "crm", "auth": {"type": "bearer", "secret": "s3cr3t-value"}}
    with pytest.raises(CatalogError, match="unknown field `secret`") as err:
        load_catalog(_catalog(tmp_path, _tool(), target=target))
    assert "s3cr3t-value" not in str(err.value)


def test_the_drift_watch_interval_is_the_targets(tmp_path: Path) -> None:
    target = {"name": "crm", "command": ["srv"], "watch_interval_s": 30}
    cfg = load_catalog(_catalog(tmp_path, _tool(), target=target)).target_config()
    assert cfg is not None and cfg.watch_interval_s == 30
    target["watch_interval_s"] = 0  # a busy loop against the upstream
    with pytest.raises(CatalogError, match="watch_interval_s"):
        load_catalog(_catalog(tmp_path, _tool(), target=target))


def test_files_that_are_no_catalog(tmp_path: Path) -> None:
    path = tmp_path / "x.yaml"
    for text, reason in (
        ("[1, 2]", "not a mapping"),
        ("a: [", "cannot be read"),
        ("catalog: 2\ntarget: {name: x}\ntools: []", "enum value 2 - at `$.catalog`"),
    ):
        path.write_text(text)
        with pytest.raises(CatalogError, match=re.escape(reason)):
            load_catalog(path)
    twice = _catalog(tmp_path, _tool(), _tool())
    with pytest.raises(CatalogError, match=re.escape("defined twice: crm.get_contact")):
        load_catalog(twice)


async def test_params_go_where_the_catalog_places_them(tmp_path: Path) -> None:
    seen: list[dict[str, Any]] = []

    async def handle(request: web.Request) -> web.Response:
        seen.append({"path": request.path, "query": dict(request.query),
                     "trace": request.headers.get("X-Trace-Id"),
                     "form": dict(await request.post())})  # fmt: skip
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_post("/lists/{list_id}/members", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    params = {"type": "object", "required": ["list_id", "email_address"], "properties": {
        "list_id": {"type": "string"}, "email_address": {"type": "string"},
        "dry_run": {"type": "boolean"}, "trace": {"type": "string"}}}  # fmt: skip
    http = {"method": "POST", "path": "/lists/{list_id}/members", "body": "form", "params": {
        "dry_run": {"in": "query", "name": "dry-run"},
        "trace": {"in": "header", "name": "X-Trace-Id"}}}  # fmt: skip
    tool = load_catalog(_catalog(tmp_path, _tool(params=params, http=http))).tools[0]
    client = TargetClient("crm", TargetConfig(base_url=f"http://127.0.0.1:{port}"), tmp_path)
    try:
        args = tool.normalize({"list_id": "a/b", "email_address": "x@example.org",
                               "dry_run": True, "trace": "t-1"})  # fmt: skip
        assert await client.call(tool.operation, args, "txn-1") == {"ok": True}  # type: ignore[arg-type]
        args = tool.normalize({"list_id": "l1", "email_address": "y@example.org"})
        await client.call(tool.operation, args, "txn-2")  # type: ignore[arg-type]
    finally:
        await client.aclose()
        await runner.cleanup()
    assert seen == [
        {"path": "/lists/a/b/members", "query": {"dry-run": "true"}, "trace": "t-1",
         "form": {"email_address": "x@example.org"}},
        {"path": "/lists/l1/members", "query": {}, "trace": None,
         "form": {"email_address": "y@example.org"}},
    ]  # fmt: skip


def test_workers_load_catalogs_named_in_handshake_toml(tmp_path: Path) -> None:
    target = {"name": "crm", "base_url": "https://crm.example",
              "auth": {"type": "bearer", "secret_env": "CRM_TOKEN"}}  # fmt: skip
    _catalog(tmp_path, _tool(), target=target)
    demo = ROOT / "services/mcp_handshake/services/dev/demo/handshake.toml"
    text = demo.read_text().replace("{target_url}", "http://127.0.0.1:1")
    text = text.replace("[tools]\n", '[tools]\ncatalogs = ["crm.catalog.yaml"]\n')
    (tmp_path / "handshake.toml").write_text(text)
    config, tools = open_tools(load_config(tmp_path / "handshake.toml"))
    assert tools.get("crm.get_contact").target == "crm"
    assert tools.get("payments.send_payment").target == "payments"
    assert config.targets["crm"].base_url == "https://crm.example"
    assert config.targets["crm"].auth.secret_env == "CRM_TOKEN"
    # handshake.toml's own declaration of a target wins over the catalog's.
    (tmp_path / "handshake.toml").write_text(
        text + '\n[targets.crm]\nbase_url = "https://crm.internal"\n'
    )
    config, _ = open_tools(load_config(tmp_path / "handshake.toml"))
    assert config.targets["crm"].base_url == "https://crm.internal"


@pytest.mark.parametrize(
    ("auth", "seen"),
    [
        ({"type": "api_key", "header": "X-Key"}, {"header": "k3y"}),
        ({"type": "api_key", "location": "query", "header": "key"}, {"query": "k3y"}),
        ({"type": "api_key", "location": "cookie", "header": "sid"}, {"cookie": "k3y"}),
        ({"type": "basic", "username": "ops"}, {"basic": "ops:k3y"}),
        ({"type": "bearer"}, {"bearer": "k3y"}),
    ],
)
async def test_every_credential_kind_reaches_the_target(
    tmp_path: Path, auth: dict[str, Any], seen: dict[str, str]
) -> None:
    import base64

    import msgspec

    from mcp_handshake.services.core.config import TargetAuth
    from mcp_handshake.services.core.tools import HttpOperation

    got: dict[str, str | None] = {}

    async def handle(request: web.Request) -> web.Response:
        authz = request.headers.get("Authorization", "")
        got.update(header=request.headers.get("X-Key"), query=request.query.get("key"),
                   cookie=request.cookies.get("sid"),
                   bearer=authz.removeprefix("Bearer ") if authz.startswith("Bearer ") else None,
                   basic=base64.b64decode(authz[6:]).decode() if authz.startswith("Basic ")
                   else None)  # fmt: skip
        return web.json_response({})

    app = web.Application()
    app.router.add_get("/x", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    (tmp_path / "secret").write_text("k3y\n")
    cfg = TargetConfig(
        base_url=f"http://127.0.0.1:{port}",
        auth=msgspec.convert({**auth, "secret_file": "secret"}, TargetAuth),
    )
    client = TargetClient("t", cfg, tmp_path)
    try:
        await client.call(HttpOperation("GET", "/x"), {}, "txn-1")
    finally:
        await client.aclose()
        await runner.cleanup()
    assert {k: v for k, v in got.items() if v is not None} == seen


def test_up_with_catalogs(tmp_path: Path) -> None:
    import subprocess
    import sys

    from mcp_handshake.services.dev.cli._stack import with_catalogs

    target = {"name": "crm", "base_url": "https://crm.example"}
    path = _catalog(tmp_path, _tool(), target=target)
    edit = with_catalogs([path])
    assert edit is not None
    demo = ROOT / "services/mcp_handshake/services/dev/demo/handshake.toml"
    home = tmp_path / "home"
    home.mkdir()
    (home / "handshake.toml").write_text(edit(demo.read_text().replace("{target_url}", "x")))
    config, tools = open_tools(load_config(home / "handshake.toml"))
    assert tools.get("crm.get_contact").target == "crm" and "crm" in config.targets
    bad = tmp_path / "bad.yaml"
    bad.write_text("catalog: 1\ntarget: {name: crm}\ntools: [{name: x}]\n")
    env = {**os.environ, "HANDSHAKE_HOME": str(tmp_path / "up-home")}
    argv = [sys.executable, "-m", "mcp_handshake.services.dev.cli", "up",
            "--catalog", str(path), "--catalog", str(bad)]  # fmt: skip
    r = subprocess.run(argv, capture_output=True, text=True, timeout=60, env=env, check=False)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "invalid_catalog" in r.stderr and "bad.yaml" in r.stderr
    assert not (tmp_path / "up-home" / "stack.json").exists()  # nothing started
