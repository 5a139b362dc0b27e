"""A worker starting against a JetStream that is not ready yet (a cluster still electing
leaders) keeps trying for a bounded, configurable time, then gives up with one line; and
the dev launcher names the process that gave up and its reason."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import nats.errors
import pytest
from nats.js.errors import APIError

from mcp_handshake.services.dev.devhome import ensure_home
from mcp_handshake.services.dev.procs import Proc, find_nats_server, free_port, wait_port
from mcp_handshake.services.dev.ready import wait_services
from mcp_handshake.services.runtime.startup import retry_transient, transient
from mcp_handshake.services.runtime.streams import StartupError
from mcp_handshake.shared.settings import Settings

WORKER = [sys.executable, "-m", "mcp_handshake.services.dev.cli", "worker"]


class _Server:
    """A plain nats-server on a fixed port, with or without JetStream."""

    def __init__(self, tmp: Path) -> None:
        self.port, self.tmp, self.proc = free_port(), tmp, None
        self.url = f"nats://127.0.0.1:{self.port}"

    def start(self, jetstream: bool) -> None:
        argv = [find_nats_server(), "-a", "127.0.0.1", "-p", str(self.port)]
        if jetstream:
            argv += ["-js", "-sd", str(self.tmp / "js")]
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(self.port, "nats-server")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[_Server]:
    s = _Server(tmp_path)
    try:
        yield s
    finally:
        s.stop()


def _env(home: Path, url: str, timeout_s: str) -> dict[str, str]:
    """An audit worker's environment: a dev home's keys and config, the given server."""
    config = ensure_home(home, "http://127.0.0.1:9")
    env = {k: v for k, v in os.environ.items() if not k.startswith("HANDSHAKE_")}
    env.update(HANDSHAKE_HOME=str(home), HANDSHAKE_CONFIG=str(config), HANDSHAKE_NATS_URL=url,
               HANDSHAKE_STARTUP_TIMEOUT_S=timeout_s)  # fmt: skip
    return env


def test_a_bus_without_jetstream_is_retried_then_given_up_with_one_line(
    server: _Server, tmp_path: Path
) -> None:
    server.start(jetstream=False)
    started = time.monotonic()
    out = subprocess.run([*WORKER, "audit"], env=_env(tmp_path, server.url, "3"),
                         capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    took = time.monotonic() - started
    lines = [line for line in (out.stdout + out.stderr).splitlines() if line.strip()]
    assert out.returncode == 8, lines
    assert lines[-1].startswith("unavailable: audit worker gave up starting after "), lines
    assert "(HANDSHAKE_STARTUP_TIMEOUT_S=3): JetStream kept answering" in lines[-1]
    assert any("retrying" in line for line in lines[:-1]), lines
    assert "Traceback" not in out.stdout + out.stderr
    assert 2 <= took < 30


def test_a_jetstream_that_comes_up_within_the_bound_is_waited_for(
    server: _Server, tmp_path: Path
) -> None:
    server.start(jetstream=False)
    log = open(tmp_path / "audit.log", "wb")
    worker = subprocess.Popen([*WORKER, "audit"], env=_env(tmp_path, server.url, "60"),
                              stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
    try:
        time.sleep(3)
        assert worker.poll() is None, (tmp_path / "audit.log").read_text()
        # The same address, now with JetStream: the worker's next attempt gets through.
        server.stop()
        server.start(jetstream=True)
        deadline = time.monotonic() + 30
        while "audit worker ready" not in (tmp_path / "audit.log").read_text():
            assert worker.poll() is None, (tmp_path / "audit.log").read_text()
            assert time.monotonic() < deadline, (tmp_path / "audit.log").read_text()
            time.sleep(0.2)
    finally:
        worker.terminate()
        worker.wait(15)
        log.close()


async def test_only_the_bus_saying_not_yet_is_retried(tmp_path: Path) -> None:
    assert transient(nats.errors.TimeoutError())
    assert transient(nats.errors.NoRespondersError())
    assert transient(APIError(code=503, description="JetStream system temporarily unavailable"))
    assert not transient(APIError(code=400, description="bad request"))
    assert not transient(StartupError("unauthenticated: refused"))
    settings = Settings(home=tmp_path).with_(startup_timeout_s=5.0)
    calls = 0

    async def flaky() -> str:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise nats.errors.TimeoutError
        return "built"

    assert await retry_transient(settings, "audit", flaky) == "built"
    assert calls == 3

    async def refused() -> str:
        raise StartupError("unauthenticated: refused", 3)

    with pytest.raises(StartupError, match="refused"):
        await retry_transient(settings, "audit", refused)


def test_the_launcher_names_the_process_that_gave_up_and_why(
    server: _Server, tmp_path: Path
) -> None:
    server.start(jetstream=True)
    said = "unavailable: audit worker gave up: JetStream kept answering"
    with open(tmp_path / "audit.log", "ab") as log:
        popen = subprocess.Popen([sys.executable, "-c", f"print({said!r}); raise SystemExit(8)"],
                                 stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
        popen.wait(10)
        waiting = wait_services({"servers": [server.url]}, {"handshake-audit": 1},
                                [Proc("audit", popen, log)], tmp_path, timeout=5)  # fmt: skip
        with pytest.raises(RuntimeError) as caught:
            asyncio.run(waiting)
    message = str(caught.value)
    assert "dead: ['audit']" in message
    assert f"audit exited 8: {said}" in message
