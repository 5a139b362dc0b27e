"""Real Redis topologies on free loopback ports: a single server (optionally TLS, ACL
users), a master with a replica watched by three Sentinels, and a six-node Redis
Cluster (three masters, three replicas). Reusable by any test or chaos harness:
start, stop, kill a node, fail over, and the settings' environment for each shape.

Passwords live in config files (0600), never on a command line.
"""

from __future__ import annotations

import contextlib
import secrets
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from mcp_handshake.services.dev.procs import free_port, wait_port
from mcp_handshake.shared.settings import write_private

__all__ = ["ClusterTopology", "RedisNode", "SentinelTopology", "SingleRedis", "TlsFiles"]

MASTER_NAME = "handshake"


def redis_server() -> str:
    exe = shutil.which("redis-server")
    if not exe:
        raise RuntimeError("redis-server not found")
    return exe


@dataclass
class TlsFiles:
    """A CA, a server certificate and a client certificate (paths), for ``tls-*``."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


@dataclass
class RedisNode:
    """One redis-server (or sentinel) process with its own directory and config."""

    home: Path
    name: str
    conf: str
    port: int = field(default_factory=free_port)
    password: str | None = None
    sentinel: bool = False
    tls: TlsFiles | None = None
    proc: subprocess.Popen[bytes] | None = None

    @property
    def dir(self) -> Path:
        return self.home / self.name

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> RedisNode:
        self.dir.mkdir(parents=True, exist_ok=True)
        conf = self.dir / "redis.conf"
        if not conf.exists():  # a restarted node keeps what it (or sentinel) rewrote
            port = f"port 0\ntls-port {self.port}\n" if self.tls else f"port {self.port}\n"
            write_private(conf, f"{port}bind 127.0.0.1\ndir {self.dir}\n{self.conf}")
        argv = [redis_server(), str(conf)] + (["--sentinel"] if self.sentinel else [])
        log = open(self.dir / "server.log", "ab")
        self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        wait_port(self.port, self.name)
        return self

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def cli(self, *args: str, check: bool = True) -> str:
        """``redis-cli`` against this node (password through the environment)."""
        argv = ["redis-cli", "-h", "127.0.0.1", "-p", str(self.port), "--no-auth-warning"]
        if self.tls is not None:
            t = self.tls
            argv += ["--tls", "--cacert", str(t.ca), "--cert", str(t.client_cert),
                     "--key", str(t.client_key)]  # fmt: skip
        env = {"REDISCLI_AUTH": self.password} if self.password else {}
        out = subprocess.run(
            [*argv, *args], capture_output=True, text=True, timeout=20, check=check,
            env={"PATH": "/usr/bin:/bin:/usr/local/bin", **env},
        )  # fmt: skip
        return out.stdout.strip()

    def info(self, section: str) -> dict[str, str]:
        lines = self.cli("INFO", section).splitlines()
        return dict(line.split(":", 1) for line in lines if ":" in line)


def _wait(what: str, ok: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(subprocess.SubprocessError, OSError, ValueError):
            if ok():
                return
        time.sleep(0.1)
    raise RuntimeError(f"timed out waiting for {what}")


def _stop_all(nodes: Iterable[RedisNode]) -> None:
    for node in nodes:
        node.stop()


def _auth_conf(password: str, extra: str = "") -> str:
    return f'requirepass "{password}"\nmasterauth "{password}"\nsave ""\nappendonly no\n{extra}'


@dataclass
class SingleRedis:
    """One server; ``acl`` lines (``user ...``) and ``tls`` as given."""

    home: Path
    acl: str = ""
    tls: TlsFiles | None = None
    password: str = field(default_factory=lambda: secrets.token_urlsafe(18))
    node: RedisNode | None = None

    def start(self) -> SingleRedis:
        extra = self.acl
        if self.tls is not None:
            t = self.tls
            extra += (f"tls-cert-file {t.server_cert}\ntls-key-file {t.server_key}\n"
                      f"tls-ca-cert-file {t.ca}\ntls-auth-clients yes\n")  # fmt: skip
        conf = f'requirepass "{self.password}"\nsave ""\nappendonly no\n{extra}'
        self.node = RedisNode(self.home, "single", conf, password=self.password, tls=self.tls)
        self.node.start()
        return self

    def url(self, user: str = "", password: str | None = None) -> str:
        assert self.node is not None
        scheme = "rediss" if self.tls else "redis"
        secret = self.password if password is None else password
        return f"{scheme}://{user}:{secret}@127.0.0.1:{self.node.port}/0"

    def stop(self) -> None:
        if self.node is not None:
            self.node.stop()


@dataclass
class SentinelTopology:
    """A master, one replica and three Sentinels (quorum 2, down after 1 s)."""

    home: Path
    password: str = field(default_factory=lambda: secrets.token_urlsafe(18))
    sentinel_password: str = field(default_factory=lambda: secrets.token_urlsafe(18))
    data: list[RedisNode] = field(default_factory=list)
    sentinels: list[RedisNode] = field(default_factory=list)

    def start(self) -> SentinelTopology:
        try:
            return self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> SentinelTopology:
        master = RedisNode(self.home, "master", _auth_conf(self.password), password=self.password)
        master.start()
        follow = f"replicaof 127.0.0.1 {master.port}\n"
        replica = RedisNode(self.home, "replica", _auth_conf(self.password, follow),
                            password=self.password)  # fmt: skip
        replica.start()
        self.data = [master, replica]
        _wait("the replica to sync", lambda: replica.info("replication").get(
            "master_link_status") == "up")  # fmt: skip
        for i in range(3):
            conf = (f"sentinel monitor {MASTER_NAME} 127.0.0.1 {master.port} 2\n"
                    f"sentinel down-after-milliseconds {MASTER_NAME} 1000\n"
                    f"sentinel failover-timeout {MASTER_NAME} 4000\n"
                    f'sentinel auth-pass {MASTER_NAME} "{self.password}"\n'
                    f'requirepass "{self.sentinel_password}"\n')  # fmt: skip
            node = RedisNode(self.home, f"sentinel{i}", conf, sentinel=True,
                             password=self.sentinel_password)  # fmt: skip
            self.sentinels.append(node.start())
        _wait("the sentinels to know each other", lambda: all(
            int(s.info("sentinel").get("sentinel_masters", "0")) == 1 and "sentinels=3"
            in s.info("sentinel").get("master0", "") for s in self.sentinels))  # fmt: skip
        return self

    def env(self) -> dict[str, str]:
        """``HANDSHAKE_*`` for the settings (sentinel password in a file beside)."""
        secret = self.home / "sentinel_password"
        write_private(secret, self.sentinel_password)
        return {
            "HANDSHAKE_REDIS_URL": f"redis://:{self.password}@{MASTER_NAME}/0",
            "HANDSHAKE_REDIS_MODE": "sentinel",
            "HANDSHAKE_REDIS_SENTINEL_MASTER": MASTER_NAME,
            "HANDSHAKE_REDIS_SENTINELS": ",".join(s.address for s in self.sentinels),
            "HANDSHAKE_REDIS_SENTINEL_PASSWORD_FILE": str(secret),
        }

    def master(self) -> RedisNode:
        host_port = self.sentinels[0].cli("SENTINEL", "get-master-addr-by-name", MASTER_NAME)
        port = int(host_port.split()[-1])
        return next(n for n in self.data if n.port == port)

    def failover(self, timeout: float = 30.0) -> RedisNode:
        """``SENTINEL FAILOVER``; returns the new master once it accepts writes."""
        old = self.master()
        self.sentinels[0].cli("SENTINEL", "FAILOVER", MASTER_NAME)
        _wait("the failover", lambda: self.master() is not old
              and self.master().info("replication").get("role") == "master", timeout)  # fmt: skip
        return self.master()

    def kill_master(self, timeout: float = 30.0) -> RedisNode:
        """SIGKILL the master; returns the replica the Sentinels promote (restart the
        old one with ``start()``: it rejoins as a replica)."""
        old = self.master()
        old.kill()
        _wait("the sentinels to promote the replica", lambda: self.master() is not old
              and self.master().info("replication").get("role") == "master", timeout)  # fmt: skip
        return self.master()

    def stop(self) -> None:
        _stop_all([*self.sentinels, *self.data])


@dataclass
class ClusterTopology:
    """Six ``--cluster-enabled`` servers: three masters, one replica each."""

    home: Path
    password: str = field(default_factory=lambda: secrets.token_urlsafe(18))
    nodes: list[RedisNode] = field(default_factory=list)

    def start(self) -> ClusterTopology:
        for i in range(6):
            bus = f"cluster-port {free_port()}\n"
            conf = _auth_conf(self.password, "cluster-enabled yes\ncluster-node-timeout 1000\n"
                              f"cluster-config-file nodes.conf\n{bus}")  # fmt: skip
            self.nodes.append(RedisNode(self.home, f"node{i}", conf, password=self.password))
        try:
            for node in self.nodes:
                node.start()
            self.nodes[0].cli("--cluster", "create", *(n.address for n in self.nodes),
                              "--cluster-replicas", "1", "--cluster-yes")  # fmt: skip
            self.wait_ok()
        except BaseException:
            self.stop()
            raise
        return self

    def url(self) -> str:
        return ",".join(f"redis://:{self.password}@{n.address}/0" for n in self.nodes[:3])

    def env(self) -> dict[str, str]:
        return {"HANDSHAKE_REDIS_URL": self.url(), "HANDSHAKE_REDIS_MODE": "cluster"}

    def live(self) -> list[RedisNode]:
        return [n for n in self.nodes if n.proc is not None]

    def wait_ok(self, timeout: float = 30.0) -> None:
        """Every running node says the cluster is ok and every replica is in sync."""

        def ok() -> bool:
            for n in self.live():
                if n.info("replication").get("role") == "slave" and n.info(
                    "replication").get("master_link_status") != "up":  # fmt: skip
                    return False
                if "cluster_state:ok" not in n.cli("CLUSTER", "INFO"):
                    return False
            return len(self.masters()) == 3

        _wait("the cluster to be ok", ok, timeout)

    def masters(self) -> list[RedisNode]:
        return [n for n in self.live() if n.info("replication").get("role") == "master"]

    def replica_of(self, master: RedisNode) -> RedisNode:
        node_id = master.cli("CLUSTER", "MYID")
        for n in self.live():
            info = n.info("replication")
            if info.get("role") == "slave" and int(info.get("master_port", 0)) == master.port:
                return n
        raise RuntimeError(f"no replica of {master.name} ({node_id})")

    def master_of_slot(self, slot: int) -> RedisNode:
        for line in self.nodes[0].cli("CLUSTER", "NODES").splitlines():
            parts = line.split()
            if "master" not in parts[2] or "fail" in parts[2]:
                continue
            for span in parts[8:]:
                lo, _, hi = span.partition("-")
                if lo.isdigit() and int(lo) <= slot <= int(hi or lo):
                    port = int(parts[1].split("@")[0].rsplit(":", 1)[1])
                    return next(n for n in self.nodes if n.port == port)
        raise RuntimeError(f"no master for slot {slot}")

    def failover(self, master: RedisNode, timeout: float = 30.0) -> RedisNode:
        """``CLUSTER FAILOVER`` on ``master``'s replica; returns the promoted node."""
        replica = self.replica_of(master)
        replica.cli("CLUSTER", "FAILOVER")
        _wait("the manual failover", lambda: replica.info("replication").get("role")
              == "master", timeout)  # fmt: skip
        self.wait_ok(timeout)
        return replica

    def stop(self) -> None:
        _stop_all(self.nodes)
