"""Tools imported from a real OpenAPI spec, called end to end through the handshake
against a local server for that spec: two reads and one restricted write, approved."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest

from mcp_handshake.services.catalog.openapi import dump_catalog, import_openapi
from mcp_handshake.services.dev.devstack import Stack, free_port
from tests.conftest import Raw, connected
from tests.support.catalog_stack import catalog_stack

ROOT = Path(__file__).resolve().parent.parent
SPEC = ROOT / "tests/data/openapi/petstore/openapi.yaml"
POLICY = """
@id("pets.find")
permit (principal, action == Action::"petstore.find_pets_by_status", resource)
when { principal.roles.contains("pets") };

@id("pets.get")
permit (principal, action == Action::"petstore.get_pet_by_id", resource)
when { principal.roles.contains("pets") };

@id("pets.add")
@approver_roles("approver")
@quorum("1")
permit (principal, action == Action::"petstore.add_pet", resource)
when { principal.roles.contains("pets") };
"""


def _serve(tmp: Path) -> tuple[subprocess.Popen[bytes], str, Path]:
    key = tmp / "petstore_key"
    key.write_text("pet-key-" + os.urandom(8).hex())
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.support.petstore_server", str(port), str(key)], cwd=ROOT
    )
    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/v3/pet/1", timeout=1)
        except urllib.error.HTTPError:
            break  # 401 without the key: it is up
        except OSError:
            if time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError("the petstore server did not start") from None
            time.sleep(0.2)
    return proc, f"http://127.0.0.1:{port}/v3", key


@pytest.fixture(scope="module")
def pet_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("petstore")
    server, base_url, key = _serve(tmp)
    catalog = tmp / "petstore.catalog.yaml"
    catalog.write_text(dump_catalog(import_openapi(str(SPEC), "petstore")))
    target = (f'\n[targets.petstore]\nbase_url = "{base_url}"\n'
              f'[targets.petstore.auth]\ntype = "api_key"\nheader = "api_key"\n'
              f'secret_file = "{key}"\n')  # fmt: skip

    def edit(text: str) -> str:
        return text.replace("[tools]\n", f'[tools]\ncatalogs = ["{catalog}"]\n') + target

    try:
        with catalog_stack(tmp / "home", POLICY, edit) as st:
            yield st
    finally:
        server.terminate()
        server.wait(timeout=10)


async def test_imported_tools_run_through_the_handshake(pet_stack: Stack) -> None:
    async with connected(pet_stack) as raw:
        alice, bob = raw.session("alice", "pets"), raw.session("bob", "approver")
        sold = await _run(raw, alice, "petstore.find_pets_by_status", {"status": "sold"})
        assert [p["name"] for p in sold.body["result"]] == ["kitty"]
        pet = await _run(raw, alice, "petstore.get_pet_by_id", {"petId": "1"}, refused=True)
        pet = await _run(raw, alice, "petstore.get_pet_by_id", {"petId": 1})
        assert pet.body["result"]["name"] == "doggie"
        new = {"id": 7, "name": "rex", "photoUrls": ["https://x/rex.png"], "status": "pending"}
        g = await raw.authorize(alice, "petstore.add_pet", new)
        assert g.error is None and g.body["status"] == "pending_approval", g.body
        assert g.body["tier"] == "restricted"
        decided = await raw.decide(bob, g.body["transaction_id"], "approve")
        assert decided.error is None, decided.body
        done = await raw.execute(alice, g.body, "petstore.add_pet", new)
        assert done.error is None, done.body
        assert done.body["result"]["name"] == "rex"
        claims = jwt.decode(done.body["receipt"], options={"verify_signature": False})
        assert claims["tool"] == "petstore.add_pet" and [a["by"] for a in claims["approvals"]]
        again = await _run(raw, alice, "petstore.get_pet_by_id", {"petId": 7})
        assert again.body["result"]["status"] == "pending"


async def _run(
    raw: Raw, session: str, tool: str, params: dict[str, Any], refused: bool = False
) -> Any:
    g = await raw.authorize(session, tool, params)
    if refused:
        assert g.error == "invalid_params", g.body  # "1" is no integer: JSON Schema types
        return g
    assert g.error is None and g.body["status"] == "granted", g.body
    assert g.body["tier"] == "internal"
    r = await raw.execute(session, g.body, tool, params)
    assert r.error is None, r.body
    return r
