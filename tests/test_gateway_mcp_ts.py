"""The official TypeScript MCP SDK (``@modelcontextprotocol/sdk``, npm) against the
gateway's ``/mcp``: an independent client discovers the metadata from the 401, calls a
public tool with the bearer session, an internal tool with a DPoP proof made by
``jose``, and a restricted one through its approval, with progress. Its dependencies
are installed from ``tests/ts_mcp/package-lock.json`` with ``npm ci`` (integrity-checked;
the lock records no registry URLs).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jwt
import pytest

from mcp_handshake.services.core.config import load_config
from mcp_handshake.services.dev.devhome import mint_session
from mcp_handshake.services.dev.devstack import Stack
from tests.conftest import AgentKey
from tests.support.http_agent import gateway_url

__all__ = ["gateway_url"]

HERE = Path(__file__).parent / "ts_mcp"
pytestmark = pytest.mark.skipif(shutil.which("npm") is None, reason="needs node and npm")


def _node_modules() -> None:
    if not (HERE / "node_modules" / "@modelcontextprotocol" / "sdk").is_dir():
        subprocess.run(["npm", "ci", "--ignore-scripts", "--no-audit", "--no-fund"], cwd=HERE,
                       check=True, capture_output=True, timeout=300)  # fmt: skip


def _text(result: dict[str, Any]) -> str:
    return " ".join(c.get("text", "") for c in result.get("content", []))


@pytest.mark.timeout(400)
def test_typescript_sdk_client(stack: Stack, gateway_url: str) -> None:
    _node_modules()
    key = AgentKey()
    session = mint_session(stack.home, "ts-ann", roles=["billing", "treasury"],
                           jkt=key.thumbprint)  # fmt: skip
    plain = mint_session(stack.home, "ts-ann", roles=["billing", "treasury"])
    private_jwk = json.loads(jwt.algorithms.OKPAlgorithm.to_jwk(key.private))
    env = {**os.environ, "MCP_URL": f"{gateway_url}/mcp", "MCP_SESSION": session,
           "MCP_BEARER_SESSION": plain,
           "MCP_DPOP_JWK": json.dumps(private_jwk)}  # fmt: skip
    run = subprocess.run(["node", str(HERE / "check.mjs")], env=env, capture_output=True,
                         text=True, timeout=120, check=False)  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    assert session not in run.stderr and plain not in run.stderr
    out = json.loads(run.stdout)

    assert out["status"] == 401
    assert out["resourceMetadataUrl"] == f"{gateway_url}/.well-known/oauth-protected-resource/mcp"
    issuer = load_config(stack.home / "handshake.toml").session.issuer
    assert out["metadata"]["resource"] == f"{gateway_url}/mcp"
    assert out["metadata"]["authorization_servers"] == [issuer]

    assert {"payments__get_exchange_rate", "payments__list_invoices"} <= set(out["tools"])
    public = out["public"]
    assert not public.get("isError"), _text(public)
    assert public["_meta"]["mcp-handshake/tier"] == "public"
    refused = out["withoutDpop"]
    assert refused["isError"] and _text(refused).startswith("validation_failed: ")
    assert "DPoP" in _text(refused)
    internal = out["internal"]
    assert not internal.get("isError"), _text(internal)
    claims = jwt.decode(internal["_meta"]["mcp-handshake/receipt"],
                        options={"verify_signature": False})  # fmt: skip
    assert claims["tier"] == "internal" and claims["sub"] == "ts-ann"
    restricted = out["restricted"]
    assert not restricted.get("isError"), _text(restricted)
    claims = jwt.decode(restricted["_meta"]["mcp-handshake/receipt"],
                        options={"verify_signature": False})  # fmt: skip
    assert claims["tier"] == "restricted"
    assert [a["by"] for a in claims["approvals"]] == ["confirmation-agent"]
    assert out["progress"] and "waiting for approval" in out["progress"][0]
