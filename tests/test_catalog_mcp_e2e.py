"""mcp-server-git from PyPI, imported and called through the whole handshake: over stdio
(status internal, add and commit restricted and approved) and over streamable HTTP."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from mcp_handshake.services.catalog.mcp_import import import_mcp
from mcp_handshake.services.catalog.openapi import dump_catalog
from mcp_handshake.services.dev.devstack import Stack
from tests.conftest import Raw, connected
from tests.support.catalog_stack import catalog_stack
from tests.test_catalog_mcp import GIT_SERVER, _git, git_http, repo  # noqa: F401 - fixtures

ROOT = Path(__file__).resolve().parent.parent
POLICY = """
@id("git.status")
permit (principal, action == Action::"git.git_status", resource)
when { principal.roles.contains("dev") };

@id("githttp.status")
permit (principal, action == Action::"githttp.git_status", resource)
when { principal.roles.contains("dev") };

@id("git.add")
@approver_roles("approver")
@quorum("1")
permit (principal, action == Action::"git.git_add", resource)
when { principal.roles.contains("dev") };

@id("git.commit")
@approver_roles("approver")
@quorum("1")
permit (principal, action == Action::"git.git_commit", resource)
when { principal.roles.contains("dev") };
"""


def _write_catalog(path: Path, target: str, where: Path) -> None:
    data = yaml.safe_load(dump_catalog(import_mcp(target, command=f"{GIT_SERVER} {where}")))
    data["target"]["timeout_s"] = 60  # a Python server started per call, on a busy machine
    path.write_text(yaml.safe_dump(data, sort_keys=False))


@pytest.fixture
def git_stack(tmp_path: Path, repo: Path, git_http: tuple[str, str]) -> Iterator[Stack]:  # noqa: F811
    url, token = git_http
    (tmp_path / "token").write_text(token)
    stdio, http = tmp_path / "git.catalog.yaml", tmp_path / "githttp.catalog.yaml"
    _write_catalog(stdio, "git", repo)
    _write_catalog(http, "githttp", repo)
    token_file = tmp_path / "token"
    over_http = (
        f'\n[targets.githttp]\nbase_url = "{url}"\ntimeout_s = 60\n'
        f'[targets.githttp.auth]\ntype = "bearer"\nsecret_file = "{token_file}"\n'
    )

    def edit(text: str) -> str:
        text = text.replace("executor_timeout_s = 10.0", "executor_timeout_s = 90.0")
        return text.replace("[tools]\n", f'[tools]\ncatalogs = ["{stdio}", "{http}"]\n') + over_http

    with catalog_stack(tmp_path / "home", POLICY, edit) as st:
        yield st


async def _approved(raw: Raw, dev: str, approver: str, tool: str, params: dict[str, Any]) -> Any:
    g = await raw.authorize(dev, tool, params)
    assert g.error is None and g.body["status"] == "pending_approval", g.body
    decided = await raw.decide(approver, g.body["transaction_id"], "approve")
    assert decided.error is None, decided.body
    r = await raw.execute(dev, g.body, tool, params)
    assert r.error is None, r.body
    return r.body["result"]


async def _internal(raw: Raw, dev: str, tool: str, params: dict[str, Any]) -> Any:
    g = await raw.authorize(dev, tool, params)
    assert g.error is None and g.body["tier"] == "internal", g.body
    r = await raw.execute(dev, g.body, tool, params)
    assert r.error is None, r.body
    return r.body["result"]


@pytest.mark.timeout(300)
async def test_mcp_server_git_through_the_handshake(git_stack: Stack, repo: Path) -> None:  # noqa: F811
    where = {"repo_path": str(repo)}
    async with connected(git_stack) as raw:
        dev, approver = raw.session("dana", "dev"), raw.session("omar", "approver")
        assert "a.txt" in str(await _internal(raw, dev, "git.git_status", where))
        assert "a.txt" in str(await _internal(raw, dev, "githttp.git_status", where))
        await _approved(raw, dev, approver, "git.git_add", {**where, "files": ["a.txt"]})
        done = await _approved(raw, dev, approver, "git.git_commit",
                               {**where, "message": "through the handshake"})  # fmt: skip
        assert "Changes committed" in str(done)
    assert "through the handshake" in _git(repo, "log", "--oneline")
    assert _git(repo, "status", "--porcelain") == ""
