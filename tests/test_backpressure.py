"""Backpressure that is fair, not false: a burst waits for the store instead of failing,
and one caller past its in-flight cap is slowed down (``rate_limited``) alone."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import jwt
import msgspec
import pytest

from mcp_handshake.services.core.config import SessionConfig
from mcp_handshake.services.core.sessions import SessionVerifier
from mcp_handshake.services.dev.devstack import Stack, StackSpec
from mcp_handshake.services.runtime.endpoint import Endpoint, Outcome, Request
from mcp_handshake.shared.errors import HandshakeError, RateLimited
from mcp_handshake.shared.keys import generate_private_key, public_jwk
from mcp_handshake.shared.wire import AuthorizeRequest
from tests.conftest import Raw, Reply, connected

TOOL = "payments.get_exchange_rate"  # public tier, no rate limit in the demo policy
RATE = {"base": "EUR", "quote": "USD"}


@pytest.fixture
def one_of_each(stack_factory: Callable[..., Stack]) -> Stack:
    """One authorize and one execute worker: every request of a burst meets the same
    process and its one Redis pool."""
    return stack_factory(StackSpec(authorize=1, execute=1, executor=1, approval=0))


async def _grant(raw: Raw, session: str) -> dict[str, Any]:
    r = await raw.authorize(session, TOOL, RATE)
    assert r.error is None, r.body
    return r.body


async def test_raced_executes_through_one_worker_never_fail_unavailable(
    one_of_each: Stack,
) -> None:
    """200 tokens, each raced 8 times at once, 1,600 executes in flight on one worker:
    far more than its Redis pool holds. Each token runs exactly once; every other attempt
    is ``invalid_transaction``, none is a false ``unavailable``. The tokens belong to 8
    agents (25 each, 200 executes in flight per agent), so no one reaches the per-caller
    cap (256) and only the pool is under test."""
    agents, tokens_each, races = 8, 25, 8
    async with connected(one_of_each) as raw:
        sessions = [raw.session(f"racer{i}") for i in range(agents)]
        owners = [s for s in sessions for _ in range(tokens_each)]
        grants = await asyncio.gather(*[_grant(raw, s) for s in owners])
        assert len({g["transaction_id"] for g in grants}) == 200
        pairs = list(zip(owners, grants, strict=True))
        replies = await asyncio.gather(
            *[raw.execute(s, g, TOOL, RATE) for s, g in pairs for _ in range(races)]
        )
    codes = Counter(r.error or "ok" for r in replies)
    assert codes == {"ok": 200, "invalid_transaction": 200 * (races - 1)}, codes
    per_token = Counter(
        g["transaction_id"]
        for i, g in enumerate(grants)
        for r in replies[i * races : (i + 1) * races]
        if r.error is None
    )
    assert set(per_token.values()) == {1} and len(per_token) == 200


async def test_a_flooding_agent_is_slowed_alone(one_of_each: Stack) -> None:
    """2,000 authorizes at once from "flood" while "calm" runs full handshakes one after
    another on the same workers: calm sees no error at all; flood sees grants and
    ``rate_limited``, never ``unavailable`` or ``internal``."""
    async with connected(one_of_each) as flood_raw, connected(one_of_each) as calm_raw:
        flood = flood_raw.session("flood")
        calm = calm_raw.session("calm")
        calm_errors: list[Reply] = []
        calm_done: list[float] = []
        flooding = asyncio.Event()
        flood_over = asyncio.Event()

        async def steady() -> None:
            while not flood_over.is_set():
                g = await calm_raw.authorize(calm, TOOL, RATE)
                r = g if g.error else await calm_raw.execute(calm, g.body, TOOL, RATE)
                if r.error:
                    calm_errors.append(r)
                calm_done.append(time.monotonic())
                flooding.set()  # the first handshake is the warm-up: then the flood starts

        calm_task = asyncio.create_task(steady())
        await asyncio.wait_for(flooding.wait(), 10)
        started = time.monotonic()
        flood_replies = await asyncio.gather(
            *[flood_raw.authorize(flood, TOOL, RATE) for _ in range(2000)]
        )
        flood_over.set()
        await asyncio.wait_for(calm_task, 10)
    assert calm_errors == []
    during = sum(t > started for t in calm_done)
    assert during >= 1, "calm must have finished handshakes while the flood ran"
    codes = Counter(r.error or "ok" for r in flood_replies)
    assert set(codes) == {"ok", "rate_limited"}, codes
    limited = next(r for r in flood_replies if r.error == "rate_limited")
    assert limited.body["error"]["retryable"] is True
    assert limited.body["error"]["retry_after_s"] > 0


# The cap itself, on an Endpoint with a handler that blocks until released.


class _Done(msgspec.Struct, frozen=True):
    sub: str


class _Msg:
    def __init__(self, session: str) -> None:
        self.data = msgspec.json.encode({"tool": TOOL, "params": {}})
        self.headers = {"Authorization": f"Bearer {session}"}
        self.reply = ""
        self.subject = "t"


async def test_the_cap_refuses_the_next_request_of_that_caller_only() -> None:
    key = generate_private_key()
    cfg = SessionConfig(issuer="iss", audience="aud", jwks_file="x", leeway_s=0)
    verifier = SessionVerifier(cfg, {"keys": [public_jwk(key)]})

    def session(sub: str) -> str:
        now = int(time.time())
        claims = {"iss": "iss", "aud": "aud", "sub": sub, "iat": now, "exp": now + 60}
        return jwt.encode(claims, key, algorithm="EdDSA", headers={"kid": public_jwk(key)["kid"]})

    cap = 3
    release, all_held, bob_in = asyncio.Event(), asyncio.Event(), asyncio.Event()
    entered: Counter[str] = Counter()

    async def blocking(req: Request[Any]) -> _Done:
        entered[req.caller.sub] += 1
        if sum(entered.values()) == cap + 1:
            all_held.set()
        if req.caller.sub == "bob":
            bob_in.set()
        await release.wait()
        if req.caller.sub == "boom":
            raise RuntimeError("a failing handler frees its slot too")
        return _Done(req.caller.sub)

    outcomes: list[tuple[str, Outcome]] = []

    def hook(req: Request[Any] | None, outcome: Outcome) -> None:
        assert req is not None and req.auth is not None
        outcomes.append((req.auth.sub, outcome))

    ep = Endpoint("t", "t", "q", AuthorizeRequest, blocking, max_payload=1000,
                  max_inflight_per_caller=cap, sessions=verifier, audit=hook)  # fmt: skip
    alice, bob, boom = session("alice"), session("bob"), session("boom")

    async def serve(s: str) -> None:
        await ep._serve(_Msg(s))  # type: ignore[arg-type]

    held = [asyncio.create_task(serve(alice)) for _ in range(cap)]
    held.append(asyncio.create_task(serve(boom)))
    await asyncio.wait_for(all_held.wait(), 5)

    await serve(alice)  # the cap + 1st: answered at once, the handler never sees it
    assert entered["alice"] == cap
    sub, refused = outcomes[-1]
    assert sub == "alice" and isinstance(refused, RateLimited)
    assert refused.retryable and refused.retry_after_s is not None and refused.retry_after_s > 0

    held.append(asyncio.create_task(serve(bob)))  # another caller is not affected
    await asyncio.wait_for(bob_in.wait(), 5)

    release.set()
    await asyncio.gather(*held)
    assert ep._by_caller == {}  # every slot released, the failing one included
    assert ep.stats.outcomes == {"ok": cap + 1, "rate_limited": 1, "internal": 1}
    assert not any(isinstance(o, HandshakeError) for s, o in outcomes if s == "bob")

    await serve(alice)  # slots free again
    assert isinstance(outcomes[-1][1], _Done)
