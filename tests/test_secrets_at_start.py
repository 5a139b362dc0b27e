"""Secrets that are weak or open to others stop a worker at start (webhook signing
secrets), and deploy/keys.py writes keys with explicit modes whatever the umask."""

from __future__ import annotations

import os
import secrets
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from mcp_handshake.services.dev.devstack import Stack

ROOT = Path(__file__).resolve().parent.parent


def _approval_with_webhook(stack: Stack, secret: Path) -> subprocess.CompletedProcess[str]:
    """An approval worker whose config names ``secret`` as its webhook secret; it must
    refuse to start (it is killed after 60 s)."""
    # beside the stack's own config, so that its relative paths still resolve
    config = stack.home / f"webhook-{secret.parent.name}.toml"
    text = (stack.home / "handshake.toml").read_text()
    section = f'\n[approval.webhook]\nurl = "http://127.0.0.1:9/hook"\nsecret_file = "{secret}"\n'
    config.write_text(text + section)
    env = {**stack.env("approval"), "HANDSHAKE_CONFIG": str(config)}
    cli = [sys.executable, "-m", "mcp_handshake.services.dev.cli", "worker", "approval"]
    return subprocess.run(cli, env=env, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("weak", ["empty", "short", "0666", "0640"])
def test_a_weak_webhook_secret_refuses_to_start(stack: Stack, tmp_path: Path, weak: str) -> None:
    secret = tmp_path / "webhook.secret"
    value = {"empty": "", "short": "s" * 31}.get(weak, secrets.token_urlsafe(48))
    secret.write_text(value)
    secret.chmod(0o600 if weak in ("empty", "short") else int(weak, 8))
    done = _approval_with_webhook(stack, secret)
    assert done.returncode != 0, done.stderr[-2000:]
    assert "webhook secret" in done.stderr, done.stderr[-2000:]
    assert ("32 bytes" if weak in ("empty", "short") else "readable by its owner") in done.stderr
    if value:
        assert value not in done.stderr + done.stdout


def test_keys_tool_sets_modes_whatever_the_umask(tmp_path: Path) -> None:
    """Under umask 000: directories 0700, private keys and secrets 0600, public 0644."""
    root = tmp_path / "config"
    for step in (["init"], ["rotate", "dispatch"], ["promote", "dispatch"], ["retire", "dispatch"]):
        cmd = [sys.executable, str(ROOT / "deploy" / "keys.py"), step[0], str(root), *step[1:]]
        subprocess.run(cmd, check=True, capture_output=True, preexec_fn=lambda: os.umask(0))
    modes = {p.relative_to(root): stat.S_IMODE(p.stat().st_mode) for p in root.rglob("*")}
    assert modes, "nothing written"
    for path, mode in modes.items():
        full = root / path
        if full.is_dir():
            expected = 0o700
        elif path.name.endswith(".jwks.json"):
            expected = 0o644
        else:  # *.pem, gateway_key, console_secret
            expected = 0o600
        assert mode == expected, f"{path}: {mode:o}"
    assert (root / "keys" / "gateway" / "gateway_key").read_text() == (
        root / "keys" / "execute" / "gateway_key"
    ).read_text()
