"""deploy/compose.yaml brought up without Docker: every service it declares, as compose
would run it, against the shipped nats.conf and redis.conf.

Docker is not available where the tests run, so each service runs as a local process
and the test does what compose would do, from the file itself:

* the NATS and Redis services get their shipped configuration files and the passwords
  of ``env.example``'s variables (generated here);
* every worker service runs its ``command`` with its ``environment`` (``${...}``
  substituted, the service hosts ``nats``/``redis`` mapped to the servers' loopback
  ports) and sees, under its own root, only its ``volumes`` (a host directory per
  bind mount, an empty one per named volume or tmpfs). Container paths in the
  environment and in the mounted ``handshake.toml`` point into that root, so a kind
  whose mounts lack a key it loads cannot start;
* each worker's healthcheck (``/readyz`` on its health port) must pass, as compose's
  ``service_healthy`` requires.

Then an agent with the NATS identity compose gives agents does a handshake and
verifies its receipt, and the gateway answers over HTTP. Left to Docker itself: the
image build, the user (10001), the read-only root and the networks.
"""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest
import yaml

from mcp_handshake.client import HandshakeClient
from mcp_handshake.services.dev.procs import find_nats_server, free_port, wait_port
from mcp_handshake.shared.keys import generate_private_key, public_jwk

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
SERVERS = {"nats", "redis"}
#: env.example's variables: empty ones are passwords (generated here), the others are
#: kept as written (the console's URL and OIDC provider).
ENV_EXAMPLE = dict(re.findall(r"^([A-Z_]+)=(.*)$", (DEPLOY / "env.example").read_text(), re.M))


class ComposeRun:
    """The compose file's services as processes in ``work``."""

    def __init__(self, work: Path) -> None:
        self.work = work
        self.compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
        self.env = {name: value or secrets.token_hex(16) for name, value in ENV_EXAMPLE.items()}
        self.ports = {"nats": free_port(), "redis": free_port(), "target": free_port()}
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.health: dict[str, int] = {}
        #: Each service's HTTP port (``--port``): the gateway's and the console's.
        self.http: dict[str, int] = {}
        self.idp = generate_private_key("EdDSA")

    # -- the host side of deploy/: what an operator prepares before `compose up` --

    def prepare(self) -> None:
        config = self.work / "deploy" / "config"
        shutil.copytree(DEPLOY / "config" / "common", config / "common")
        subprocess.run([sys.executable, str(DEPLOY / "keys.py"), "init", str(config)],
                       check=True, capture_output=True)  # fmt: skip
        jwk = {**public_jwk(self.idp.public_key()), "kid": "idp-1", "use": "sig"}
        (config / "common" / "idp.jwks.json").write_text(json.dumps({"keys": [jwk]}))
        api_key = config / "targets" / "payments" / "api_key"
        api_key.parent.mkdir(parents=True, exist_ok=True)  # keys.py may have made it
        api_key.write_text(secrets.token_hex(16))
        for name in ("nats", "redis"):
            shutil.copytree(DEPLOY / name, self.work / "deploy" / name)

    def _log(self, name: str) -> Any:
        return open(self.work / f"{name}.log", "ab")

    def _spawn(self, name: str, argv: list[str], env: dict[str, str]) -> None:
        env = {"PATH": "/usr/bin:/bin:/usr/local/bin", "HOME": str(self.work), **env}
        with self._log(name) as out:
            self.procs[name] = subprocess.Popen(
                argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env
            )

    def start_servers(self) -> None:
        d = self.work / "deploy"
        nats = self.compose["services"]["nats"]
        conf = nats["command"][nats["command"].index("-c") + 1]
        assert conf == "/etc/nats/nats.conf"
        # Its volumes: nats.conf as shipped, the nats-data volume at /data.
        assert "nats-data:/data" in nats["volumes"]
        conf_file = d / "nats" / "nats.conf"
        text = conf_file.read_text().replace('"/data/', f'"{self.work}/nats-data/')
        conf_file.write_text(text.replace("listen: 0.0.0.0:4222",
                                          f"listen: 127.0.0.1:{self.ports['nats']}"))  # fmt: skip
        self._spawn("nats", [find_nats_server(), "-c", str(conf_file)],
                    self._environment(nats, self.work))  # fmt: skip
        # Its volumes: redis.conf as shipped, the redis-data volume at /data; its command.
        redis = self.compose["services"]["redis"]
        assert "redis-data:/data" in redis["volumes"]
        (self.work / "redis-data").mkdir()
        conf_file = d / "redis" / "redis.conf"
        text = conf_file.read_text().replace("dir /data", f"dir {self.work}/redis-data")
        text = text.replace("bind 0.0.0.0", "bind 127.0.0.1")
        conf_file.write_text(text.replace("port 6379", f"port {self.ports['redis']}"))
        argv = [str(conf_file) if a == "/etc/redis/redis.conf" else a for a in redis["command"]]
        argv = [re.sub(r"\$\{(\w+)[^}]*\}", lambda m: self.env[m.group(1)], a) for a in argv]
        self._spawn("redis", argv, {})
        key = self.work / "deploy" / "config" / "targets" / "payments" / "api_key"
        self._spawn("target", [sys.executable, "-m", "mcp_handshake.services.dev.demo.target",
                               "--port", str(self.ports["target"]),
                               "--api-key-file", str(key)], {})  # fmt: skip
        for name in ("nats", "redis", "target"):
            wait_port(self.ports[name], name)

    # -- one worker service, as compose runs it --

    def _root(self, name: str, service: dict[str, Any]) -> Path:
        """The service's filesystem as its mounts make it: nothing else under it."""
        root = self.work / "roots" / name
        for volume in service.get("volumes", []):
            source, target = volume.split(":")[:2]
            inside = root / target.lstrip("/")
            if source.startswith("./"):
                shutil.copytree(self.work / "deploy" / source[2:], inside)
            else:  # a named volume: one directory, seen by every service that mounts it
                shared = self.work / "volumes" / source
                shared.mkdir(parents=True, exist_ok=True)
                inside.parent.mkdir(parents=True, exist_ok=True)
                inside.symlink_to(shared, target_is_directory=True)
        for tmpfs in service.get("tmpfs", []):
            (root / tmpfs.split(":")[0].lstrip("/")).mkdir(parents=True, exist_ok=True)
        config = root / "etc" / "handshake" / "config" / "handshake.toml"
        if config.exists():  # container paths inside the mounted configuration
            text = config.read_text().replace('"/etc/handshake/', f'"{root}/etc/handshake/')
            target = f"http://127.0.0.1:{self.ports['target']}"
            config.write_text(text.replace("https://payments.example.com", target))
        return root

    def _environment(self, service: dict[str, Any], root: Path) -> dict[str, str]:
        env = {}
        for key, value in service.get("environment", {}).items():
            value = re.sub(r"\$\{(\w+)[^}]*\}", lambda m: self.env[m.group(1)], str(value))
            value = value.replace("@nats:4222", f"@127.0.0.1:{self.ports['nats']}")
            value = value.replace("@redis:6379", f"@127.0.0.1:{self.ports['redis']}")
            if key == "HANDSHAKE_CONSOLE_HOST":  # the container's 0.0.0.0: loopback here
                value = "127.0.0.1"
            env[key] = f"{root}{value}" if value.startswith("/") else value
        return env

    def _command(self, name: str, command: list[str]) -> list[str]:
        argv = list(command)
        for flag in ("--health-port", "--port"):
            if flag in argv:
                port = free_port()
                argv[argv.index(flag) + 1] = str(port)
                if flag == "--health-port":
                    self.health[name] = port
                else:
                    self.http[name] = port
        if "--host" in argv:
            argv[argv.index("--host") + 1] = "127.0.0.1"
        return [sys.executable, "-m", "mcp_handshake.services.dev.cli", *argv]

    def start_workers(self) -> list[str]:
        names = [n for n in self.compose["services"] if n not in SERVERS]
        for name in names:
            service = self.compose["services"][name]
            root = self._root(name, service)
            self._spawn(name, self._command(name, service["command"]),
                        self._environment(service, root))  # fmt: skip
        return names

    def wait_healthy(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        waiting = dict(self.health)
        while waiting:
            for name, port in list(waiting.items()):
                if self.procs[name].poll() is not None:
                    log = (self.work / f"{name}.log").read_text()[-2000:]
                    raise AssertionError(f"{name} exited: {log}")
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=3):
                        del waiting[name]
                except (urllib.error.URLError, OSError):
                    pass
            if time.monotonic() > deadline:
                raise AssertionError(f"not healthy in {timeout} s: {sorted(waiting)}")
            time.sleep(0.2)

    def session(self, sub: str, *roles: str) -> str:
        now = int(time.time())
        claims = {"iss": "https://idp.example.com", "aud": "mcp-handshake", "sub": sub,
                  "iat": now, "exp": now + 300, "roles": list(roles)}  # fmt: skip
        return jwt.encode(claims, self.idp, algorithm="EdDSA", headers={"kid": "idp-1"})

    def stop(self) -> None:
        for proc in self.procs.values():
            proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.fixture(scope="module")
def compose(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ComposeRun]:
    run = ComposeRun(tmp_path_factory.mktemp("compose"))
    try:
        run.prepare()
        run.start_servers()
        run.start_workers()
        run.wait_healthy()
        yield run
    finally:
        run.stop()


def test_every_worker_service_becomes_healthy(compose: ComposeRun) -> None:
    kinds = {s["command"][1] for n, s in compose.compose["services"].items() if n not in SERVERS}
    assert {"authorize", "execute", "executor", "approval", "audit", "gateway", "console"} <= kinds
    assert set(compose.health) == set(compose.procs) - SERVERS - {"target"}
    assert all(p.poll() is None for p in compose.procs.values())


async def test_an_agent_completes_a_handshake_and_it_is_audited(compose: ComposeRun) -> None:
    """The agent's NATS identity from compose's nats.conf, a session from the IdP whose
    JWKS the operator mounted; the receipt verified with the execute worker's key; the
    events in the log on the audit worker's volume."""
    options = {"user": "agent", "password": compose.env["NATS_AGENT_PASSWORD"],
               "inbox_prefix": "_INBOX.agent"}  # fmt: skip
    session = compose.session("alice", "billing")
    async with HandshakeClient(f"nats://127.0.0.1:{compose.ports['nats']}", session=session,
                               connect_options=options) as hs:  # fmt: skip
        result = await hs.call("payments.get_exchange_rate", {"base": "EUR", "quote": "USD"})
    assert result.result["base"] == "EUR" and result.receipt
    log = compose.work / "volumes" / "audit-log" / "audit" / "audit.log"
    deadline = time.monotonic() + 15
    while not (log.exists() and result.transaction_id in log.read_text()):
        assert time.monotonic() < deadline, "the handshake's events never reached the log"
        await asyncio.sleep(0.2)


def test_the_gateway_answers_over_http(compose: ComposeRun) -> None:
    request = urllib.request.Request(
        f"http://127.0.0.1:{compose.http['gateway']}/v1/tools",
        headers={"Authorization": f"Bearer {compose.session('alice', 'billing')}"},
    )
    with urllib.request.urlopen(request, timeout=10) as resp:  # noqa: S310 - http://127.0.0.1
        tools = json.loads(resp.read())
    names = {t["name"] for t in tools["tools"]}
    assert {"payments.get_exchange_rate", "payments.list_invoices"} <= names


def test_a_kind_without_its_keys_exits_with_one_line(compose: ComposeRun) -> None:
    """The execute service given the authorize service's key mount (a wrong volume):
    it stops at start with one line naming the file, not a traceback."""
    service = dict(compose.compose["services"]["execute"])
    service["volumes"] = [v.replace("keys/execute", "keys/authorize") for v in service["volumes"]]
    root = compose._root("execute-wrong-mount", service)
    argv = compose._command("execute-wrong-mount", service["command"])
    env = {"PATH": "/usr/bin:/bin", "HOME": str(compose.work),
           **compose._environment(service, root)}  # fmt: skip
    out = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 2, out.stderr[-2000:]
    # Its log lines (JSON), then the one line; no traceback.
    last = out.stderr.strip().splitlines()[-1]
    assert last == (f"configuration: cannot read {root}/etc/handshake/keys/receipt.pem: "
                    "No such file or directory"), out.stderr[-2000:]  # fmt: skip
    assert "Traceback" not in out.stderr


def test_the_console_serves_sign_in_and_reads_the_audit_log(compose: ComposeRun) -> None:
    """The console as compose runs it: its page answers (sign-in with the OIDC provider
    of env.example), and the audit log it reads is the one on the audit worker's volume,
    verified with the public key set its own key mount holds."""
    base = f"http://127.0.0.1:{compose.http['console']}"
    with urllib.request.urlopen(f"{base}/healthz", timeout=10) as resp:  # noqa: S310
        assert resp.read() == b"ok"
    with urllib.request.urlopen(f"{base}/login", timeout=10) as resp:  # noqa: S310
        assert resp.status == 200 and "/login/oidc" in resp.read().decode()
    root = compose.work / "roots" / "console"
    home = root / "var" / "lib" / "handshake"
    assert home.resolve() == (compose.work / "volumes" / "audit-log").resolve()
    keys = {p.name for p in (root / "etc" / "handshake" / "keys").iterdir()}
    assert keys == {"audit.jwks.json"}  # the public half only: it cannot sign a checkpoint


async def test_the_console_redis_user_reads_counters_and_nothing_else(
    compose: ComposeRun,
) -> None:
    """Compose's Redis as its command starts it: the console's ACL user counts pending
    approvals and live tokens, and is refused a write, another key and a script."""
    import redis.asyncio as aioredis
    from redis.exceptions import NoPermissionError

    url = (f"redis://console:{compose.env['REDIS_CONSOLE_PASSWORD']}"
           f"@127.0.0.1:{compose.ports['redis']}/0")  # fmt: skip
    client = aioredis.Redis.from_url(url)
    try:
        assert await client.zcard("handshake:tokens:live") >= 0
        assert await client.zcard("handshake:approvals:pending") >= 0
        for refused in (
            client.set("handshake:tokens:expired", b"0"),
            client.get("handshake:tx:anything"),
            client.eval("return 1", 0),
        ):
            with pytest.raises(NoPermissionError):
                await refused
    finally:
        await client.aclose()
