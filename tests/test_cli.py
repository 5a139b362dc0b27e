"""The command line, as a user runs it against the running stack."""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from mcp_handshake.services.dev.cli._exits import EXIT_CLASSES, EXIT_CODES
from mcp_handshake.services.dev.devstack import Stack
from mcp_handshake.services.dev.procs import free_port
from mcp_handshake.shared.errors import ERRORS_BY_CODE
from mcp_handshake.shared.keys import load_private_key, public_jwk
from mcp_handshake.shared.settings import Settings
from tests.conftest import ROOT, AgentKey

AUTH, INVALID, DENIED, PENDING, RATE_LIMITED = 3, 4, 5, 6, 7
UNAVAILABLE, OUTCOME_UNKNOWN, TARGET_ERROR = 8, 9, 10


def run_cli(
    *args: str, env: dict[str, str], cwd: Path | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mcp_handshake.services.dev.cli", *args],
        env={**env, "PYTHONPATH": str(ROOT)},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def cli(
    stack: Stack, *args: str, session: str | None = None, **env: str
) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, **stack.env(), **env}
    full.pop("HANDSHAKE_SESSION", None)
    if session:
        full["HANDSHAKE_SESSION"] = session
    return run_cli(*args, env=full)


def no_stack_env(tmp_path: Path, nats_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HANDSHAKE_")}
    return {**env, "HANDSHAKE_HOME": str(tmp_path / "home"), "HANDSHAKE_NATS_URL": nats_url}


def test_mint_bound_session_then_call_internal_tool(stack: Stack) -> None:
    minted = cli(stack, "token", "mint", "--sub", "cli-alice", "--role", "billing", "--bind-key")
    assert minted.returncode == 0, minted.stderr
    session = minted.stdout.strip()
    out = cli(stack, "call", "payments.list_invoices", "--params", '{"limit": 1}', session=session)
    assert out.returncode == 0, out.stderr
    body = json.loads(out.stdout)
    assert body["receipt"]["sub"] == "cli-alice" and body["receipt"]["tier"] == "internal"
    tools = cli(stack, "tools", session=session)
    assert "payments.create_invoice" in tools.stdout


def test_register_key_for_unbound_session(stack: Stack) -> None:
    session = cli(stack, "token", "mint", "--sub", "cli-erin", "--role", "billing").stdout.strip()
    refused = cli(stack, "call", "payments.list_invoices", session=session)
    assert refused.returncode == INVALID and refused.stderr.startswith("validation_failed: ")
    reg = cli(stack, "keys", "register", "--sub", "cli-erin")  # this user's agent key
    assert reg.returncode == 0, reg.stderr
    ok = cli(stack, "call", "payments.list_invoices", session=session)
    assert ok.returncode == 0, ok.stderr
    revoked = cli(stack, "keys", "revoke", "--sub", "cli-erin", reg.stdout.strip())
    assert revoked.returncode == 0, revoked.stderr
    again = cli(stack, "call", "payments.list_invoices", session=session)
    assert again.returncode == INVALID and "validation_failed" in again.stderr
    assert cli(stack, "keys", "revoke", "--sub", "cli-erin", reg.stdout.strip()).returncode == 1
    unreadable = cli(stack, "keys", "register", "--sub", "cli-erin", str(stack.home / "none"))
    assert unreadable.returncode == 2 and len(unreadable.stderr.splitlines()) == 1


def one_line(out: subprocess.CompletedProcess[str], code: str) -> str:
    """The single stderr line of a failed command, checked to start with ``code``."""
    lines = out.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{code}: "), out.stderr
    assert out.returncode == EXIT_CODES.get(code, 2), (out.returncode, out.stderr)
    return lines[0]


def test_errors_are_one_line_without_traceback(stack: Stack) -> None:
    one_line(cli(stack, "call", "payments.list_invoices", session="garbage"), "unauthenticated")
    line = one_line(
        cli(stack, "call", "test.echo", "--params", '{"text":\n "a",, }', session="garbage"),
        "usage",
    )
    assert "line 2, column 6 (char 14)" in line, line
    line = one_line(cli(stack, "call", "test.echo", "--params", "[1]", session="x"), "usage")
    assert "must be a JSON object" in line


def test_missing_session_is_unauthenticated(stack: Stack) -> None:
    for args in (("tools",), ("call", "test.echo"), ("approvals", "list")):
        line = one_line(cli(stack, *args), "unauthenticated")
        assert "HANDSHAKE_SESSION" in line


def test_exit_code_per_error_class_against_the_stack(stack: Stack) -> None:
    def mint(sub: str, *roles: str) -> str:
        args = [a for r in roles for a in ("--role", r)]
        out = cli(stack, "token", "mint", "--sub", sub, "--bind-key", *args)
        assert out.returncode == 0, out.stderr
        return out.stdout.strip()

    nobody, carol, tess = (
        mint("cli-nobody"),
        mint("cli-carol", "support"),
        mint("cli-tess", "treasury"),
    )
    cases = [
        (nobody, "payments.create_invoice", '{"customer_id": "cus_8f3k2m9q", "amount": 5, '
         '"currency": "EUR"}', "forbidden"),
        (nobody, "no.such_tool", "{}", "unknown_tool"),
        (nobody, "test.echo", '{"text": "hi", "extra": 1}', "invalid_params"),
        (carol, "customers.get_customer", '{"customer_id": "cus_doesnotexist"}', "target_error"),
        (nobody, "test.sleep", '{"seconds": 3}', "outcome_unknown"),
        (tess, "payments.send_payment", '{"to_account": "acct_4f9d2a", "amount": 75000, '
         '"currency": "EUR"}', "approval_denied"),
        (tess, "payments.send_payment", '{"to_account": "acct_zz1234", "amount": 700, '
         '"currency": "EUR"}', "approval_pending"),
    ]  # fmt: skip
    for session, tool, params, code in cases:
        out = cli(stack, "call", tool, "--params", params, "--wait", "1", session=session)
        one_line(out, code)
    limited = mint(f"cli-rl-{time.time_ns()}")
    asyncio.run(_use_up_rate_limit(stack, limited))  # 3 per 5 s, from the window's start
    out = cli(stack, "call", "test.limited", "--params", '{"text": "hi"}', session=limited)
    one_line(out, "rate_limited")


async def _use_up_rate_limit(stack: Stack, session: str) -> None:
    from mcp_handshake.client import HandshakeClient

    async with HandshakeClient(
        stack.nats_url or "", session=session, connect_options=stack.agent_options()
    ) as hs:
        for _ in range(3):
            await hs.authorize("test.limited", {"text": "hi"})


def test_every_error_code_has_one_documented_exit_code() -> None:
    assert set(EXIT_CODES) == set(ERRORS_BY_CODE)
    numbers = [c.code for c in EXIT_CLASSES]
    assert len(set(numbers)) == len(numbers) and 2 in numbers
    readme = (ROOT / "README.md").read_text()
    help_text = run_cli("--help", env={**os.environ, "COLUMNS": "200"}).stdout
    for c in EXIT_CLASSES:
        assert re.search(rf"^\| {c.code} \| {c.name} \| ", readme, re.M), c
        for code in c.errors:
            assert f"`{code}`" in readme.split(f"| {c.code} | {c.name} |")[1].split("\n")[0]
        assert re.search(rf"^\s*{c.code}\s+{c.name}\b", help_text, re.M), help_text


def _silent_port() -> socket.socket:
    """A port that accepts TCP connections and never says anything (a hung server)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    return sock


@pytest.mark.parametrize("server", ["closed", "silent"])
def test_unreachable_nats_is_one_line_within_3s(tmp_path: Path, server: str) -> None:
    silent = _silent_port() if server == "silent" else None
    port = silent.getsockname()[1] if silent else free_port()  # nobody listens on it
    env = no_stack_env(tmp_path, f"nats://agent:s3cret@127.0.0.1:{port}")
    expected = f"unavailable: cannot reach NATS at nats://***@127.0.0.1:{port}"
    try:
        for args in (
            ("tools", "--session", "x"),
            ("call", "test.echo", "--session", "x"),
            ("approvals", "list", "--session", "x"),
            ("status", "--once"),
            ("audit", "tail"),
        ):
            started = time.monotonic()
            out = run_cli(*args, env=env, timeout=20)
            elapsed = time.monotonic() - started
            assert out.stderr.splitlines() == [expected], (args, out.stderr)
            assert out.returncode == UNAVAILABLE and out.stdout == ""
            # About 3 s on a quiet machine (the 2 s connect deadline plus the interpreter
            # starting up), more on a busy one; nats-py's own retries took over a minute.
            assert elapsed < 12, (args, elapsed)
    finally:
        if silent:
            silent.close()


def test_unreachable_key_registry_is_one_line(tmp_path: Path) -> None:
    port = free_port()  # the registry is in NATS KV: Redis plays no part
    env = {**no_stack_env(tmp_path, f"nats://127.0.0.1:{port}"),
           "HANDSHAKE_REDIS_URL": "redis://:pw@127.0.0.1:1/0"}  # fmt: skip
    for args in (("keys", "register", "--sub", "x"), ("keys", "revoke", "--sub", "x", "kid")):
        line = one_line(run_cli(*args, env=env, timeout=20), "unavailable")
        assert line == f"unavailable: cannot reach NATS at nats://127.0.0.1:{port}"


def test_token_mint_caps_ttl_and_binds_public_keys(stack: Stack, tmp_path: Path) -> None:
    one_line(cli(stack, "token", "mint", "--sub", "x", "--ttl", "86401"), "usage")
    one_line(cli(stack, "token", "mint", "--sub", "x", "--ttl", "0"), "usage")
    day = cli(stack, "token", "mint", "--sub", "x", "--ttl", "86400")
    claims = jwt.decode(day.stdout.strip(), options={"verify_signature": False})
    assert claims["exp"] - claims["iat"] == 86400 and "cnf" not in claims

    key = AgentKey()  # its thumbprint computed by hand, per RFC 7638
    (tmp_path / "agent.jwk").write_text(json.dumps(key.jwk))
    pem = key.private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    (tmp_path / "agent.pub.pem").write_bytes(pem)
    p256 = ec.generate_private_key(ec.SECP256R1())
    (tmp_path / "p256.pem").write_bytes(
        p256.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    for name, thumbprint in (
        ("agent.jwk", key.thumbprint),
        ("agent.pub.pem", key.thumbprint),
        ("p256.pem", public_jwk(p256)["kid"]),
    ):
        out = cli(stack, "token", "mint", "--sub", "x", "--public-key", str(tmp_path / name))
        assert out.returncode == 0, out.stderr
        claims = jwt.decode(out.stdout.strip(), options={"verify_signature": False})
        assert claims["cnf"] == {"jkt": thumbprint}, name

    rsa_pem = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
    (tmp_path / "rsa.pem").write_bytes(
        rsa_pem.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    (tmp_path / "junk").write_text("{not json")
    for bad in ("rsa.pem", "junk"):
        out = cli(stack, "token", "mint", "--sub", "x", "--public-key", str(tmp_path / bad))
        one_line(out, "usage")
    both = cli(stack, "token", "mint", "--sub", "x", "--bind-key", "--public-key",
               str(tmp_path / "agent.jwk"))  # fmt: skip
    one_line(both, "usage")


def test_agent_key_lives_in_the_user_config_dir(stack: Stack, tmp_path: Path) -> None:
    xdg = tmp_path / "xdg"
    minted = cli(stack, "token", "mint", "--sub", "k", "--bind-key", XDG_CONFIG_HOME=str(xdg))
    assert minted.returncode == 0, minted.stderr
    path = xdg / "mcp-handshake" / "agent.pem"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(xdg.stat().st_mode) == 0o700
    claims = jwt.decode(minted.stdout.strip(), options={"verify_signature": False})
    assert claims["cnf"]["jkt"] == public_jwk(load_private_key(path))["kid"]
    assert not (stack.home / "keys" / "agent.pem").exists()
    assert stat.S_IMODE((stack.home / "keys").stat().st_mode) == 0o700

    override = tmp_path / "elsewhere" / "mine.pem"
    out = cli(stack, "token", "mint", "--sub", "k", "--bind-key",
              HANDSHAKE_AGENT_KEY=str(override), XDG_CONFIG_HOME=str(xdg))  # fmt: skip
    assert out.returncode == 0, out.stderr
    claims = jwt.decode(out.stdout.strip(), options={"verify_signature": False})
    assert claims["cnf"]["jkt"] == public_jwk(load_private_key(override))["kid"]
    assert stat.S_IMODE(override.stat().st_mode) == 0o600


def test_agent_key_location_does_not_depend_on_the_current_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"
    env = {"HOME": str(home)}
    assert Settings.from_env(env).agent_key == home / ".config" / "mcp-handshake" / "agent.pem"
    relative_xdg = Settings.from_env({**env, "XDG_CONFIG_HOME": "cfg"}).agent_key
    assert relative_xdg == home / ".config" / "mcp-handshake" / "agent.pem"  # XDG: ignored
    xdg = Settings.from_env({**env, "XDG_CONFIG_HOME": str(tmp_path / "x")}).agent_key
    assert xdg == tmp_path / "x" / "mcp-handshake" / "agent.pem"
    tilde = Settings.from_env({**env, "HANDSHAKE_AGENT_KEY": "~/k/agent.pem"}).agent_key
    assert tilde == home / "k" / "agent.pem"

    from mcp_handshake.client import HandshakeClient

    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "cfg"))
    made = []
    for cwd in ("a", "b"):
        (tmp_path / cwd).mkdir()
        monkeypatch.chdir(tmp_path / cwd)
        HandshakeClient.from_env()
        made.append(sorted(p.name for p in (tmp_path / cwd).iterdir()))
    assert made == [[], []]  # nothing written where the process happens to run
    key = tmp_path / "cfg" / "mcp-handshake" / "agent.pem"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600


def test_status_shows_every_worker_kind(stack: Stack) -> None:
    session = cli(stack, "token", "mint", "--sub", "cli-status").stdout.strip()
    rate = '{"base": "EUR", "quote": "USD"}'
    assert (
        cli(
            stack, "call", "payments.get_exchange_rate", "--params", rate, session=session
        ).returncode
        == 0
    )
    out = cli(stack, "status", "--json")
    assert out.returncode == 0, out.stderr
    snap = json.loads(out.stdout)
    up = {k: v["instances"] for k, v in snap["workers"].items()}
    assert up == {"authorize": 2, "execute": 2, "executor": 1, "approval": 2, "audit": 1}
    assert snap["workers"]["authorize"]["requests"] > 0
    assert isinstance(snap["approvals_pending"], int)
    assert isinstance(snap["audit_lag"], int)
    table = cli(stack, "status", "--once")
    assert table.returncode == 0 and "authorize" in table.stdout and "audit lag" in table.stdout


def test_audit_show_export_tail_and_verify(stack: Stack) -> None:
    env = {**os.environ, **stack.env()}
    with open(stack.home / "tail.out", "w") as sink:  # follows new events only
        tail = subprocess.Popen(
            [sys.executable, "-m", "mcp_handshake.services.dev.cli", "audit", "tail"],
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    try:
        time.sleep(2)
        session = cli(stack, "token", "mint", "--sub", "cli-audit").stdout.strip()
        out = cli(
            stack,
            "call",
            "payments.get_exchange_rate",
            "--params",
            '{"base": "EUR", "quote": "CHF"}',
            session=session,
        )
        assert out.returncode == 0, out.stderr
        txn = json.loads(out.stdout)["transaction_id"]
        deadline = time.monotonic() + 15
        show = cli(stack, "audit", "show", txn)
        while "receipt.issued" not in show.stdout and time.monotonic() < deadline:
            time.sleep(0.3)
            show = cli(stack, "audit", "show", txn)
    finally:
        tail.terminate()
        tail.wait(timeout=10)
    for kind in ("authorize.granted", "execute.intent", "execute.succeeded", "receipt.issued"):
        assert kind in show.stdout, show.stdout
    assert txn in (stack.home / "tail.out").read_text()
    exported = [
        json.loads(x) for x in cli(stack, "audit", "export", "--since", "600").stdout.splitlines()
    ]
    assert {e["kind"] for e in exported if e.get("txn") == txn} >= {"receipt.issued"}
    verified = cli(stack, "audit", "verify")
    assert verified.returncode == 0 and "OK" in verified.stdout, verified.stdout


async def test_approvals_show_prints_agent_text_literally(stack: Stack) -> None:
    from mcp_handshake.services.dev.devhome import mint_session
    from tests.test_client import agent

    reason = "[link=http://evil.example]urgent[/link] pay \u202egnp.exe"
    async with agent(stack, "tess-show", "treasury") as hs:
        pending = await hs.submit(
            "payments.send_payment",
            {"to_account": "acct_zz1234", "amount": 700, "currency": "EUR"},
            context={"agent": "[bold]bot[/bold]", "reason": reason},
        )
    victor = mint_session(stack.home, "victor", roles=["approver"])
    deadline = time.monotonic() + 10
    shown = cli(stack, "approvals", "show", pending.transaction_id, session=victor)
    while shown.returncode != 0 and time.monotonic() < deadline:
        await asyncio.sleep(0.3)
        shown = cli(stack, "approvals", "show", pending.transaction_id, session=victor)
    assert shown.returncode == 0, shown.stderr
    assert "[link=http://evil.example]" in shown.stdout and "[bold]bot[/bold]" in shown.stdout
    assert "\u202e" not in shown.stdout and "\\u202e" in shown.stdout
    assert "acct_zz1234" in shown.stdout  # approvers see the full recipient
    assert "written by the requester, unverified" in shown.stdout
