"""Bad answers from an upstream MCP server, through the whole handshake: content that
breaks the tool's own declared outputSchema, and an answer of about 10 MB, each get a
clear target_error; the executor survives and serves the next call. The upstream is a
raw JSON-RPC script (tests/support/raw_mcp.py): the SDK's own server would refuse to
send such content."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from mcp_handshake.services.catalog.mcp_import import import_mcp
from mcp_handshake.services.catalog.openapi import dump_catalog
from mcp_handshake.services.dev.devstack import Stack
from tests.conftest import connected
from tests.support.catalog_stack import catalog_stack

ROOT = Path(__file__).resolve().parent.parent
POLICY = "".join(
    f'\n@id("raw.{name}")\npermit (principal, action == Action::"raw.{name}", resource)\n'
    'when { principal.roles.contains("dev") };\n'
    for name in ("badout", "big", "ok")
)


@pytest.fixture
def raw_stack(tmp_path: Path) -> Iterator[Stack]:
    command = f"{sys.executable} -m tests.support.raw_mcp"
    data = yaml.safe_load(dump_catalog(import_mcp("raw", command=command)))
    data["target"]["timeout_s"] = 60
    for tool in data["tools"]:
        tool["tier"] = "public"  # the operator's review: these read nothing
    catalog = tmp_path / "raw.catalog.yaml"
    catalog.write_text(yaml.safe_dump(data, sort_keys=False))

    def edit(text: str) -> str:
        # room for 10 MB over stdio on a busy machine before execute gives up
        text = text.replace("executor_timeout_s = 10.0", "executor_timeout_s = 40.0")
        return text.replace("[tools]\n", f'[tools]\ncatalogs = ["{catalog}"]\n', 1)

    with catalog_stack(tmp_path / "home", POLICY, edit) as st:
        yield st


@pytest.mark.timeout(300)
@pytest.mark.parametrize(
    ("tool", "message"),
    [
        ("raw.badout", "the upstream's structuredContent does not match the tool's own "
                       "outputSchema"),
        ("raw.big", "the upstream answered more than 1048576 bytes"),
    ],
)  # fmt: skip
async def test_bad_upstream_answers_are_target_errors(
    raw_stack: Stack, tool: str, message: str
) -> None:
    async with connected(raw_stack) as raw:
        dev = raw.session("dana", "dev")

        async def call(name: str) -> Any:
            g = await raw.authorize(dev, name, {})
            assert g.error is None, g.body
            body = {"transaction_id": g.body["transaction_id"], "tool": name, "params": {}}
            headers = {"Handshake-Transaction-Token": g.body["token"]}
            return await raw.request(raw.s.execute, body, dev, headers, timeout=60)

        bad = await call(tool)
        assert bad.error == "target_error", bad.body
        assert bad.body["error"]["message"] == message
        assert "many" not in str(bad.body)  # the upstream's content is not quoted
        ok = await call("raw.ok")  # the executor survived and serves the next call
        assert ok.error is None and ok.body["result"] == {"count": 1}, ok.body
