"""Fixtures: real nats-server and redis-server on free ports, the whole stack as processes.

Nothing here touches servers on the standard ports. With ``HANDSHAKE_TEST_ENGINES`` set
(``make test-cluster``), the session's shared stack runs on the engines of a real
deployment instead: a three-node NATS cluster (streams and buckets with three replicas)
and a Redis Cluster (``cluster``: three masters, three replicas) or a Redis master and
replica watched by three Sentinels (``sentinel``).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import os
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import msgspec
import nats
import pytest
import rfc8785
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from redis.asyncio import Redis

from mcp_handshake.services.dev.devhome import mint_session
from mcp_handshake.services.dev.devstack import Stack, StackSpec
from mcp_handshake.services.store.redis import redis_client
from mcp_handshake.shared.subjects import Subjects
from tests.support.redis_topologies import ClusterTopology, SentinelTopology, SingleRedis

ROOT = Path(__file__).resolve().parent.parent

#: The test deployment's tools' policies (tests/support/testtools.py), after the demo's.
TEST_POLICY = (ROOT / "tests" / "support" / "policy.cedar").read_text()


def _test_config(text: str) -> str:
    text = text.replace(
        'modules = ["mcp_handshake.services.dev.demo.tools"]',
        'modules = ["mcp_handshake.services.dev.demo.tools", "tests.support.testtools"]',
    )
    return text.replace("executor_timeout_s = 10.0", "executor_timeout_s = 2.0")


def make_stack(home: Path, spec: StackSpec, **kw: Any) -> Stack:
    demo_policy = resources.files("mcp_handshake.services.dev.demo").joinpath("policy.cedar")
    home.mkdir(parents=True, exist_ok=True)
    (home / "policy.cedar").write_text(demo_policy.read_text() + TEST_POLICY)
    return Stack(
        home,
        spec,
        extra_env={"PYTHONPATH": str(ROOT), "HANDSHAKE_LOG_LEVEL": "INFO"},
        config_edit=_test_config,
        **kw,
    )


@pytest.fixture(scope="session", autouse=True)
def _agent_keys_in_tmp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Agent keys (``Settings.agent_key``) go to a temporary config directory, for this
    process and every CLI it starts: no test writes to the user's real home."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XDG_CONFIG_HOME", str(tmp_path_factory.mktemp("xdg-config")))
        mp.delenv("HANDSHAKE_AGENT_KEY", raising=False)
        yield


@pytest.fixture
def stack_factory(tmp_path: Path) -> Iterator[Callable[..., Stack]]:
    """Whole stacks of a test's own (for tests that stop servers or workers)."""
    made: list[Stack] = []

    def make(spec: StackSpec | None = None, **env: str) -> Stack:
        st = make_stack(tmp_path / f"home{len(made)}", spec or StackSpec())
        st.extra_env.update(env)
        made.append(st)
        asyncio.run(st.start())
        return st

    try:
        yield make
    finally:
        for st in made:
            st.stop()


@pytest.fixture
async def single(tmp_path: Path) -> AsyncIterator[SingleRedis]:
    """A redis-server of the test's own (no stack), for the store's connection tests."""
    server = SingleRedis(tmp_path / "redis").start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def own_stack(stack_factory: Callable[..., Stack]) -> Stack:
    return stack_factory()


#: ``cluster`` or ``sentinel``: the engines the session stack runs on (see the docstring).
ENGINES = os.environ.get("HANDSHAKE_TEST_ENGINES", "")
Topology = ClusterTopology | SentinelTopology


@contextlib.contextmanager
def engine_stack(
    home: Path, spec: StackSpec, engines: str = ENGINES
) -> Iterator[tuple[Stack, Topology | None]]:
    """A started stack: on its own single servers, or (``engines``) on a three-node NATS
    cluster and a Redis Cluster or Sentinel topology of its own; all stopped after."""
    topology: Topology | None = None
    if engines == "cluster":
        topology = ClusterTopology(home / "redis-cluster")
    elif engines == "sentinel":
        topology = SentinelTopology(home / "redis-sentinel")
    elif engines:
        raise ValueError(f"HANDSHAKE_TEST_ENGINES={engines!r}: use cluster or sentinel")
    if topology is not None:
        topology.start()
        spec = StackSpec(**{**spec.__dict__, "nats_nodes": 3})
    try:
        env = topology.env() if topology is not None else {}
        st = make_stack(home / "home", spec, redis_url=env.get("HANDSHAKE_REDIS_URL"))
        st.extra_env.update(env)
        try:
            asyncio.run(st.start(timeout=120 if topology else None))
            yield st, topology
        finally:
            st.stop()
    finally:
        if topology is not None:
            topology.stop()


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The stack most tests share. Every test of a session needs it, so a start that
    fails (a worker not answering in time on a loaded machine) is tried once more, on
    fresh servers; the first attempt's logs stay in its home."""
    spec = StackSpec(authorize=2, execute=2, executor=1, approval=2)
    with contextlib.ExitStack() as started:
        try:
            st, _ = started.enter_context(engine_stack(tmp_path_factory.mktemp("stack"), spec))
        except RuntimeError as exc:
            if "did not come up" not in str(exc):
                raise
            print(f"\nshared stack: {exc}; starting it again")
            st, _ = started.enter_context(engine_stack(tmp_path_factory.mktemp("stack"), spec))
        yield st


@dataclass
class Reply:
    """A raw reply: protocol error code (or None) and the decoded JSON body."""

    error: str | None
    status: str | None
    body: dict[str, Any]
    headers: dict[str, str]


class AgentKey:
    """An agent's Ed25519 key, and proofs built with plain PyJWT (protocol.md)."""

    def __init__(self) -> None:
        self.private = Ed25519PrivateKey.generate()
        self.jwk = json.loads(jwt.algorithms.OKPAlgorithm.to_jwk(self.private.public_key()))
        members = json.dumps({k: self.jwk[k] for k in ("crv", "kty", "x")}, separators=(",", ":"))
        digest = hashlib.sha256(members.encode()).digest()
        self.thumbprint = base64.urlsafe_b64encode(digest).rstrip(b"=").decode()

    def decision(self, txn: str, preview_hash: str, decision: str) -> str:
        """An approver's signed decision (protocol.md), with plain PyJWT."""
        claims = {"txn": txn, "preview_hash": preview_hash, "decision": decision,
                  "iat": int(time.time()), "jti": uuid.uuid4().hex}  # fmt: skip
        headers = {"typ": "handshake-decision+jwt", "kid": self.thumbprint, "jwk": self.jwk}
        return jwt.encode(claims, self.private, algorithm="EdDSA", headers=headers)

    def proof(self, txn: str, tool: str, ph: str, **override: Any) -> str:
        claims = {
            "txn": txn,
            "tool": tool,
            "ph": ph,
            "iat": int(time.time()),
            "jti": uuid.uuid4().hex,
        }
        headers = {"typ": "handshake-proof+jwt", "kid": self.thumbprint, "jwk": self.jwk}
        headers.update(override.pop("headers", {}))
        claims.update(override)
        return jwt.encode(claims, self.private, algorithm="EdDSA", headers=headers)


class Raw:
    """Speaks protocol v1 with plain nats-py and PyJWT, no project client involved."""

    def __init__(self, nc: nats.NATS, stack: Stack) -> None:
        self.nc = nc
        self.stack = stack
        self.s = Subjects()
        self.keys: dict[str, AgentKey] = {}
        self._session_keys: dict[str, AgentKey] = {}
        #: Preview hashes seen in approvals lists, by transaction (what approvers sign).
        self._previews: dict[str, str] = {}

    def key(self, sub: str) -> AgentKey:
        return self.keys.setdefault(sub, AgentKey())

    def session(self, sub: str, *roles: str, bind: bool = True, **kw: Any) -> str:
        """A dev session for ``sub``, bound (cnf.jkt) to that subject's agent key."""
        key = self.key(sub)
        token = mint_session(
            self.stack.home, sub, roles=list(roles), jkt=key.thumbprint if bind else None, **kw
        )
        self._session_keys[token] = key
        return token

    async def request(
        self,
        subject: str,
        body: dict[str, Any] | bytes,
        session: str | None = None,
        headers: dict[str, str] | None = None,
        timeout: float = 10.0,
    ) -> Reply:
        hdrs = dict(headers or {})
        if session is not None:
            hdrs["Authorization"] = f"Bearer {session}"
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        msg = await self.nc.request(subject, data, timeout=timeout, headers=hdrs or None)
        h = dict(msg.headers or {})
        parsed = json.loads(msg.data) if msg.data else {}
        err = parsed.get("error", {}).get("code") if "Nats-Service-Error" in h else None
        return Reply(err, h.get("Nats-Service-Error-Code"), parsed, h)

    async def authorize(self, session: str, tool: str, params: dict[str, Any]) -> Reply:
        return await self.request(self.s.authorize, {"tool": tool, "params": params}, session)

    async def execute(
        self,
        session: str,
        grant: dict[str, Any],
        tool: str,
        params: dict[str, Any],
        extra_headers: dict[str, str] | None = None,
        proof: bool = True,
        signed_params: dict[str, Any] | None = None,
    ) -> Reply:
        """Execute; above the public tier a proof by the session's key is attached, over
        the grant's params hash, or over ``signed_params`` (an attacker signing what it
        sends)."""
        headers = {"Handshake-Transaction-Token": grant["token"], **(extra_headers or {})}
        key = self._session_keys.get(session)
        if proof and key and grant.get("tier", "public") != "public":
            ph = ph_of(signed_params) if signed_params is not None else grant["params_hash"]
            headers.setdefault("Handshake-Proof", key.proof(grant["transaction_id"], tool, ph))
        body = {"transaction_id": grant["transaction_id"], "tool": tool, "params": params}
        return await self.request(self.s.execute, body, session, headers)

    async def preview_hash(self, session: str, txn: str) -> str | None:
        """The preview hash ``session`` is shown for ``txn`` (remembered once seen)."""
        if txn not in self._previews:
            listed = await self.request(self.s.approvals_list, {}, session)
            for a in listed.body.get("approvals", []):
                self._previews[a["transaction_id"]] = a["preview_hash"]
        return self._previews.get(txn)

    async def decide(
        self, session: str, txn: str, decision: str, reason: str = "looked fine", sign: bool = True
    ) -> Reply:
        """``approvals.decide``; a session bound to a key signs over the preview it lists
        (or a preview hash of nothing, when it lists none: the decision is refused anyway)."""
        body = {"transaction_id": txn, "decision": decision, "reason": reason}
        key = self._session_keys.get(session)
        headers = {}
        if sign and key is not None:
            ph = await self.preview_hash(session, txn) or "sha256:" + "0" * 64
            headers["Handshake-Proof"] = key.decision(txn, ph, decision)
        return await self.request(self.s.approvals_decide, body, session, headers)

    async def target_stats(self) -> dict[str, Any]:
        key = (self.stack.home / "secrets" / "payments_api_key").read_text().strip()
        async with (
            aiohttp.ClientSession() as client,
            client.get(f"{self.stack.target_url}/_stats", headers={"X-API-Key": key}) as resp,
        ):
            data: dict[str, Any] = await resp.json()
            return data


@contextlib.asynccontextmanager
async def connected(stack: Stack, identity: str = "agent") -> AsyncIterator[Raw]:
    """A raw protocol speaker on its own NATS connection to ``stack``, as one of its NATS
    identities (an agent by default; a worker kind or ``operator`` where a test must act
    as one)."""
    nc = await nats.connect(**stack.connect_options(identity))
    try:
        yield Raw(nc, stack)
    finally:
        await nc.close()


@pytest.fixture
async def raw(stack: Stack) -> AsyncIterator[Raw]:
    async with connected(stack) as r:
        yield r


@pytest.fixture
async def operator(stack: Stack) -> AsyncIterator[Raw]:
    """The operator's connection: discovery (``$SRV``) and stream management."""
    async with connected(stack, "operator") as r:
        yield r


@pytest.fixture
async def redis(stack: Stack) -> AsyncIterator[Redis]:
    """The stack's token store, through the client its settings describe (a Redis
    Cluster or Sentinel client under ``HANDSHAKE_TEST_ENGINES``)."""
    client: Any = redis_client(stack.settings())
    try:
        yield client
    finally:
        await client.aclose()


def decode(data: bytes) -> Any:
    return msgspec.json.decode(data)


def ph_of(params: dict[str, Any]) -> str:
    """protocol.md's params hash of already-normalized params: SHA-256 over JCS."""
    return "sha256:" + hashlib.sha256(rfc8785.dumps(params)).hexdigest()
