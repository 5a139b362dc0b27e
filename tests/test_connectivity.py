"""NATS connectivity from settings: TLS with a private CA, credentials of every kind,
and a worker that cannot connect exits with one line, never a hang."""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from mcp_handshake.services.dev.devstack import Stack, StackSpec, find_nats_server, free_port
from mcp_handshake.services.dev.procs import wait_port
from mcp_handshake.services.runtime.worker import connect_nats
from mcp_handshake.shared.natsconn import connect_options
from mcp_handshake.shared.settings import Settings
from tests.conftest import make_stack

WORKER = [sys.executable, "-m", "mcp_handshake.services.dev.cli", "worker"]


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())  # fmt: skip


Key = ec.EllipticCurvePrivateKey


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _cert(subject: str, key: Key, issuer: tuple[str, Key] | None, ca: bool) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    name = _name(subject)
    issuer_name = _name(issuer[0]) if issuer else name
    builder = (
        x509.CertificateBuilder().subject_name(name).issuer_name(issuer_name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )  # fmt: skip
    if not ca:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                                         x509.DNSName("localhost")]), critical=False)  # fmt: skip
    return builder.sign(issuer[1] if issuer else key, hashes.SHA256())


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


@pytest.fixture
def tls_nats(tmp_path: Path) -> Iterator[tuple[str, Path, Path]]:
    """A nats-server that speaks only TLS, its CA file, and another CA's file."""
    ca_key, other_key, server_key = (ec.generate_private_key(ec.SECP256R1()) for _ in range(3))
    ca = _cert("test CA", ca_key, None, ca=True)
    other = _cert("other CA", other_key, None, ca=True)
    server = _cert("127.0.0.1", server_key, ("test CA", ca_key), ca=False)
    for name, data in (
        ("ca.pem", _pem(ca)),
        ("other.pem", _pem(other)),
        ("server.pem", _pem(server)),
        ("server.key", _key_pem(server_key)),
    ):
        (tmp_path / name).write_bytes(data)  # fmt: skip
    port = free_port()
    conf = tmp_path / "nats.conf"
    cert, key = tmp_path / "server.pem", tmp_path / "server.key"
    conf.write_text(f'listen: "127.0.0.1:{port}"\n'
                    f'tls {{\n  cert_file: "{cert}"\n  key_file: "{key}"\n}}\n')  # fmt: skip
    log = open(tmp_path / "nats.log", "wb")
    proc = subprocess.Popen([find_nats_server(), "-c", str(conf)], stdout=log, stderr=log)
    try:
        wait_port(port, "nats-server")
        yield f"nats://127.0.0.1:{port}", tmp_path / "ca.pem", tmp_path / "other.pem"
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()


def _run_worker(env: dict[str, str], timeout: float = 30.0) -> tuple[int, list[str], float]:
    started = time.monotonic()
    out = subprocess.run([*WORKER, "authorize"], env=env, capture_output=True, text=True,
                         timeout=timeout, check=False)  # fmt: skip
    lines = [line for line in (out.stdout + out.stderr).splitlines() if line.strip()]
    return out.returncode, lines, time.monotonic() - started


def _env(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HANDSHAKE_")}
    env.update(HANDSHAKE_HOME=str(home), **extra)
    return env


def test_connect_options_from_settings(tmp_path: Path) -> None:
    creds, seed = tmp_path / "a.creds", tmp_path / "a.nk"
    s = Settings.from_env({
        "HANDSHAKE_NATS_URL": "nats://a:4222, nats://b:4222", "HANDSHAKE_NATS_USER": "execute",
        "HANDSHAKE_NATS_CREDS": str(creds), "HANDSHAKE_NATS_TOKEN": "t0ken",
        "HANDSHAKE_HOME": str(tmp_path),
    })  # fmt: skip
    o = connect_options(s, "x")
    assert o["servers"] == ["nats://a:4222", "nats://b:4222"]
    assert o["user_credentials"] == str(creds) and o["token"] == "t0ken"
    assert o["inbox_prefix"] == "_INBOX.execute" and "password" not in o
    assert "t0ken" not in repr(s)
    s = Settings.from_env({"HANDSHAKE_NATS_NKEY_SEED": str(seed), "HANDSHAKE_HOME": str(tmp_path)})
    assert connect_options(s, "x")["nkeys_seed"] == str(seed)


async def test_tls_with_a_private_ca(tls_nats: tuple[str, Path, Path], tmp_path: Path) -> None:
    url, ca, _ = tls_nats
    s = Settings.from_env({"HANDSHAKE_NATS_URL": url, "HANDSHAKE_NATS_TLS_CA": str(ca),
                           "HANDSHAKE_HOME": str(tmp_path)})  # fmt: skip
    assert isinstance(connect_options(s, "x")["tls"], ssl.SSLContext)
    nc = await connect_nats(s, "test")
    try:
        assert nc.is_connected
    finally:
        await nc.close()


def test_an_untrusted_server_certificate_exits_with_one_line(
    tls_nats: tuple[str, Path, Path], tmp_path: Path
) -> None:
    url, _, other = tls_nats
    code, lines, took = _run_worker(_env(tmp_path, HANDSHAKE_NATS_URL=url,
                                         HANDSHAKE_NATS_TLS_CA=str(other)))  # fmt: skip
    assert code == 8, lines
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"unavailable: TLS handshake with NATS at {url} failed"), lines
    assert "certificate verify failed" in lines[0] or "unable to get" in lines[0], lines
    assert took < 20


@pytest.fixture
def nats_only(tmp_path: Path) -> Iterator[Stack]:
    st = make_stack(tmp_path / "home", StackSpec())
    st.start_nats()
    try:
        yield st
    finally:
        st.stop()


def test_a_wrong_password_exits_with_one_line(nats_only: Stack) -> None:
    env = {**nats_only.env("authorize"), "HANDSHAKE_NATS_PASSWORD": "not-the-password"}
    code, lines, took = _run_worker(env)
    assert code == 3, lines
    assert len(lines) == 1, lines
    assert lines[0] == (f"unauthenticated: NATS at {nats_only.nats_url} refused the "
                        "credentials of authorize")  # fmt: skip
    assert "not-the-password" not in lines[0]
    assert took < 20


def test_no_nats_server_exits_with_one_line_soon(tmp_path: Path) -> None:
    """Nothing listens at the NATS URL (connection refused): the worker says so in one
    line within seconds, instead of retrying inside nats-py's connect for minutes."""
    with socket.socket() as probe:  # a port that was free a moment ago: nothing listens
        probe.bind(("127.0.0.1", 0))
        url = f"nats://127.0.0.1:{probe.getsockname()[1]}"
    code, lines, took = _run_worker(_env(tmp_path, HANDSHAKE_NATS_URL=url))
    assert code == 8, lines
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"unavailable: cannot connect to NATS at {url}"), lines
    assert took < 20


def test_sigterm_while_connecting_stops_at_once(tmp_path: Path) -> None:
    # A server that accepts the connection and never says a word.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        url = f"nats://127.0.0.1:{silent.getsockname()[1]}"
        proc = subprocess.Popen([*WORKER, "authorize"], env=_env(tmp_path, HANDSHAKE_NATS_URL=url),
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT)  # fmt: skip
        time.sleep(2.0)
        assert proc.poll() is None
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)
        assert time.monotonic() - started < 5
        assert proc.stdout is not None
        assert b"Traceback" not in proc.stdout.read()
        proc.stdout.close()
