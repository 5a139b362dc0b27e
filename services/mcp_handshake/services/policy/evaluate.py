"""One decision: build the Cedar request cheaply, evaluate the policies of one action
that can apply to the caller, and read the answer (verdict, deciding policies, and
what the permits demand).

What is handed to Cedar besides the context is parsed once and kept (:mod:`.prepared`).

A ``forbid`` whose evaluation fails (say, an overflow) refuses the call: an error
never turns a refusal into a permit. A permit that fails to evaluate does not permit.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import msgspec

from mcp_handshake.services.core.policy import Caller, RateLimit, Rules
from mcp_handshake.services.policy.annotations import Effects
from mcp_handshake.services.policy.compiled import ActionSet, CompiledPolicy
from mcp_handshake.services.policy.prepared import ENTITY_CACHE, answer

__all__ = ["Agent", "Phase", "decide", "listable"]

Phase = Literal["authorize", "execute", "approve"]

_encode = msgspec.json.encode
_ERRORED = re.compile(r"policy `([^`]+)`")


@dataclass(frozen=True, slots=True)
class Agent:
    """The calling agent, as the bus and the proof tell (not as the agent says)."""

    #: The NATS identity the request came from (its reply inbox prefix).
    nats_user: str | None = None
    #: The thumbprint of the key that proved possession (or the session's ``cnf.jkt``).
    jkt: str | None = None
    #: Whether a proof of possession was given and verified.
    proof: bool = False


def _clock(now: float, fields: frozenset[str] | None) -> dict[str, int]:
    t = time.gmtime(now)
    clock = {"epoch": int(now), "hour": t.tm_hour, "minute": t.tm_min, "weekday": t.tm_wday}
    return clock if fields is None else {k: v for k, v in clock.items() if k in fields}


def _agent(agent: Agent, fields: frozenset[str] | None) -> dict[str, str]:
    present = (("nats_user", agent.nats_user), ("jkt", agent.jkt))
    return {k: v for k, v in present if v and (fields is None or k in fields)}


def _context(
    action: ActionSet, params: Mapping[str, Any] | None, phase: str, agent: Agent
) -> dict[str, Any]:
    """The context, with only what the action's policies read."""
    reads = action.reads
    top = reads.top
    context: dict[str, Any] = {}
    if top is None or "params" in top:
        context["params"] = action.params(params) if params is not None else {}
    if top is None or "tier" in top:
        context["tier"] = action.tool.tier.value
    if top is None or "phase" in top:
        context["phase"] = phase
    if top is None or "proof" in top:
        context["proof"] = agent.proof
    if top is None or "agent" in top:
        context["agent"] = _agent(agent, reads.agent)
    if top is None or "time" in top:
        context["time"] = _clock(time.time(), reads.time)
    return context


def _request(
    action: ActionSet, caller: Caller, params: Mapping[str, Any] | None, phase: str, agent: Agent
) -> dict[str, Any]:
    return {"principal": {"type": "User", "id": caller.sub},
            "action": {"type": "Action", "id": action.tool.name},
            "resource": {"type": "Target", "id": action.tool.target},
            "context": _encode(_context(action, params, phase, agent)).decode()}  # fmt: skip


def _evaluate(
    compiled: CompiledPolicy, caller: Caller, action: ActionSet, request: dict[str, Any]
) -> tuple[bool, list[str]]:
    """(allowed, deciding policy ids); a forbid that errored denies."""
    allowed, reasons, errors = answer(compiled, caller, action, request)
    if errors:
        errored = {m for e in errors for m in _ERRORED.findall(e)}
        if errored & action.forbids or not errored:
            return False, sorted(errored & action.forbids) or ["(evaluation error)"]
    return allowed, sorted(reasons)


def _strictest_rate(limits: list[RateLimit]) -> RateLimit | None:
    return min(limits, key=lambda r: r.requests / r.per_s) if limits else None


def _permit(compiled: CompiledPolicy, tool: str, effects: list[Effects], ids: list[str]) -> Rules:
    d = compiled.defaults
    approval = sorted(e.approval for e in effects if e.approval is not None)
    roles = frozenset().union(*(e.approver_roles for e in effects))
    quorums = [e.quorum for e in effects if e.quorum is not None]
    approval_ttls = [e.approval_ttl_s for e in effects if e.approval_ttl_s is not None]
    token_ttls = [e.token_ttl_s for e in effects if e.token_ttl_s is not None]
    limits = [e.rate_limit for e in effects if e.rate_limit is not None]
    mask: dict[str, str] = {}
    for e in effects:
        mask.update(e.mask)
    return Rules(
        tool=tool,
        verdict="approval" if approval else "permit",
        token_ttl_s=min(token_ttls, default=d.token_ttl_s),
        approval_ttl_s=min(approval_ttls, default=d.approval_ttl_s),
        approver_roles=roles or d.approver_roles,
        quorum=max(quorums, default=1),
        rate_limit=_strictest_rate(limits) or d.rate_limit,
        escalated=approval[0] if approval else None,
        mask=mask,
        policy_ids=tuple(ids),
        policy_hash=compiled.hash,
    )


def denied(compiled: CompiledPolicy, tool: str, ids: tuple[str, ...] = ()) -> Rules:
    d = compiled.defaults
    return Rules(tool, "deny", d.token_ttl_s, d.approval_ttl_s, d.approver_roles,
                 policy_ids=ids, policy_hash=compiled.hash)  # fmt: skip


def decide(
    compiled: CompiledPolicy,
    caller: Caller,
    tool: str,
    params: Mapping[str, Any],
    *,
    phase: Phase,
    agent: Agent,
) -> Rules:
    """The decision for one call (``InvalidParams`` for a value policy cannot compare)."""
    action = compiled.actions.get(tool)
    if action is None:
        return denied(compiled, tool)
    request = _request(action, caller, params, phase, agent)
    allowed, ids = _evaluate(compiled, caller, action, request)
    key = (tool, allowed, tuple(ids))
    rules: Rules | None = compiled.decisions.get(key)
    if rules is None:
        if allowed:
            rules = _permit(compiled, tool, [action.effects[i] for i in ids], ids)
        else:
            rules = denied(compiled, tool, tuple(ids))
        compiled.decisions[key] = rules  # bounded: by the policies' combinations
    return rules


def listable(compiled: CompiledPolicy, caller: Caller, tool: str) -> bool:
    """Whether some params could be permitted to ``caller``: evaluated without params, a
    permit that holds, or one that needed the params to tell, and no forbid that holds."""
    action = compiled.actions.get(tool)
    if action is None:
        return False
    timeless = action.reads.top is not None and "time" not in action.reads.top
    key = (caller, tool)
    if timeless and key in compiled.listable:
        return compiled.listable[key]
    request = _request(action, caller, None, "authorize", Agent())
    allowed, reasons, errors = answer(compiled, caller, action, request)
    errored = {m for e in errors for m in _ERRORED.findall(e)}
    some = allowed or (not set(reasons) & action.forbids and bool(errored - action.forbids))
    if timeless:  # the same caller always gets the same answer from this set
        if len(compiled.listable) >= ENTITY_CACHE * 10:
            compiled.listable.clear()
        compiled.listable[key] = some
    return some
