"""Edges of the system: JWKS over HTTP, OAuth2 targets, the `up` launcher, the demo."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import jwt
from aiohttp import web

from mcp_handshake.services.core.config import SessionConfig, TargetAuth, TargetConfig
from mcp_handshake.services.core.sessions import SessionVerifier
from mcp_handshake.services.core.tools import HttpOperation
from mcp_handshake.services.executor.targets import TargetClient
from mcp_handshake.shared.errors import TargetError
from mcp_handshake.shared.keys import generate_private_key, public_jwk

ROOT = Path(__file__).resolve().parent.parent


async def _serve(app: web.Application) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, f"http://127.0.0.1:{port}"


async def test_session_keys_from_a_jwks_url() -> None:
    key = generate_private_key()

    async def jwks(request: web.Request) -> web.Response:
        return web.json_response({"keys": [public_jwk(key)]})

    app = web.Application()
    app.router.add_get("/jwks", jwks)
    runner, base = await _serve(app)
    try:
        cfg = SessionConfig(issuer="i", audience="a", jwks_url=f"{base}/jwks")
        verifier = await SessionVerifier.create(cfg, Path("."))
    finally:
        await runner.cleanup()
    now = int(time.time())
    token = jwt.encode(
        {"iss": "i", "aud": "a", "sub": "u", "iat": now, "exp": now + 60},
        key,
        algorithm="EdDSA",
        headers={"kid": public_jwk(key)["kid"]},
    )
    assert verifier.verify(f"Bearer {token}").sub == "u"


async def test_oauth2_client_credentials_target(tmp_path: Path) -> None:
    (tmp_path / "secret").write_text("s3cr3t-client")
    issued: list[str] = []

    async def token(request: web.Request) -> web.Response:
        form = await request.post()
        auth = request.headers.get("Authorization", "")
        if form.get("grant_type") != "client_credentials" or not auth.startswith("Basic "):
            return web.json_response({"error": "invalid_client"}, status=401)
        issued.append("t")
        return web.json_response({"access_token": f"tok-{len(issued)}", "expires_in": 300})

    async def api(request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != "Bearer tok-1":
            return web.json_response({"error": {"code": "bad_token"}}, status=401)
        return web.json_response({"ok": True, "key": request.headers.get("Idempotency-Key")})

    app = web.Application()
    app.router.add_post("/token", token)
    app.router.add_get("/v1/thing", api)
    runner, base = await _serve(app)
    try:
        auth = TargetAuth(
            type="oauth2_client_credentials",
            token_url=f"{base}/token",
            client_id="handshake",
            secret_file="secret",
        )
        client = TargetClient("t", TargetConfig(base_url=base, auth=auth), tmp_path)
        op = HttpOperation("GET", "/v1/thing")
        for txn in ("txn-1", "txn-2"):
            assert await client.call(op, {}, txn) == {"ok": True, "key": txn}
        assert issued == ["t"]  # the access token is cached
        bad = TargetClient("t", TargetConfig(base_url=base), tmp_path)
        try:
            await bad.call(op, {}, "txn-3")
            raise AssertionError("expected a target error")
        except TargetError as exc:
            assert "401" in exc.message and "bad_token" in exc.message
        await client.aclose()
        await bad.aclose()
    finally:
        await runner.cleanup()


def _children(pid: int) -> set[int]:
    kids = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            kids.add(int(stat.parent.name))
    return kids


def test_up_starts_everything_and_sigterm_leaves_nothing_behind(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HANDSHAKE_")}
    env["HANDSHAKE_HOME"] = str(tmp_path / "home")
    out = tmp_path / "up.out"
    with open(out, "w") as sink:
        up = subprocess.Popen(
            [sys.executable, "-m", "mcp_handshake.services.dev.cli", "up"],
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    try:
        stack_file = tmp_path / "home" / "stack.json"
        deadline = time.monotonic() + 60
        while not stack_file.exists() and time.monotonic() < deadline and up.poll() is None:
            time.sleep(0.2)
        assert stack_file.exists(), out.read_text()
        info: dict[str, Any] = json.loads(stack_file.read_text())
        assert info["nats_url"] != "nats://127.0.0.1:4222"  # never the standard ports
        assert not info["redis_url"].startswith("redis://127.0.0.1:6379")
        # It prints where the HTTP gateway and the web console are, and both answer.
        while "web console" not in out.read_text() and time.monotonic() < deadline:
            time.sleep(0.2)
        printed = out.read_text()
        gateway = re.search(r"HTTP gateway (http://127\.0\.0\.1:\d+)", printed)
        console = re.search(r"web console\s+(http://127\.0\.0\.1:\d+)", printed)
        assert gateway and console, printed
        assert info["gateway_url"] == gateway.group(1)
        for url in (f"{gateway.group(1)}/openapi.json", f"{console.group(1)}/healthz"):
            with urllib.request.urlopen(url, timeout=10) as resp:  # noqa: S310 - loopback
                assert resp.status == 200, url
        kids = _children(up.pid)
        assert len(kids) >= 8  # nats, redis, target, five worker kinds
        minted = subprocess.run(
            [sys.executable, "-m", "mcp_handshake.services.dev.cli", "token", "mint", "--sub", "u"],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        call = subprocess.run(
            [
                sys.executable,
                "-m",
                "mcp_handshake.services.dev.cli",
                "call",
                "payments.get_exchange_rate",
                "--params",
                '{"base": "EUR", "quote": "GBP"}',
            ],
            env={**env, "HANDSHAKE_SESSION": minted.stdout.strip()},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert call.returncode == 0, call.stderr
        up.send_signal(signal.SIGTERM)
        up.wait(timeout=60)
        time.sleep(0.5)
        alive = [
            k
            for k in kids
            if Path(f"/proc/{k}").exists()
            and "Z" not in Path(f"/proc/{k}/stat").read_text().rsplit(")", 1)[1][:3]
        ]
        assert alive == []
        assert not stack_file.exists()
    finally:
        if up.poll() is None:
            up.kill()


def test_the_demo_runs_end_to_end(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HANDSHAKE_")}
    env["HANDSHAKE_HOME"] = str(tmp_path / "home")
    demo = subprocess.run(
        [sys.executable, "-m", "mcp_handshake.services.dev.cli", "demo"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert demo.returncode == 0, demo.stdout[-3000:]
    assert "demo complete" in demo.stdout
