"""Policy evaluation cost per phase: one Cedar decision, as authorize and execute take it.

    python bench/policy_eval.py [--n 3000]

Sets measured (each a decision at authorize and one at execute, p50 and p99 in µs),
each twice, interleaved: partitioned by action only (before), and by action and
principal (what runs: the policies given to Cedar are those that can apply to the
caller):

- ``demo``: the demo policy (services/.../dev/demo/policy.cedar) on its tools;
- ``1000 over 200 tools``: 1,000 generated policies (permits on roles and amounts,
  forbids on agents) over a catalog of 200 generated tools;
- ``1000 on one tool``: 1,000 policies all naming the measured tool, as a policy of
  that size would be written (per-team, per-role and per-user permits with
  thresholds, some in the attribute form ``policy convert`` writes, and forbids on
  any principal); what it holds is printed;
- ``cedarpy, whole set``: the 1,000-policy set given whole to ``cedarpy.is_authorized``
  with the same request, for comparison.

Times are CPU time per decision (this thread's), so that the machine's other load
counts only as far as it slows the CPU this process gets. Each decision has an amount
not asked before (a policy set keeps Cedar's answers to the same caller, tool and
context: the same question again costs what the last line prints). Goal (issue 21):
p50 <= 100 µs per phase with 1,000 policies.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any

import cedarpy
from pydantic import BaseModel, ConfigDict, Field, create_model

from mcp_handshake.services.core.config import PolicyDefaults
from mcp_handshake.services.core.policy import Caller
from mcp_handshake.services.core.tools import Tier, Tool
from mcp_handshake.services.dev.demo.tools import TOOLS
from mcp_handshake.services.policy import Agent, Policy
from mcp_handshake.services.policy.compiled import compile_policy
from mcp_handshake.services.policy.evaluate import _context, _request
from mcp_handshake.services.policy.prepared import ANSWER_CACHE, authorize, policies, view

DEMO = Path(__file__).resolve().parent.parent / "services/mcp_handshake/services/dev/demo"
ALICE = Caller("alice", frozenset({"billing", "role7"}), frozenset({"payments:write"}))
#: The caller of the one-tool set: a member of one team, one role, one legacy role.
MEMBER = Caller("user-42", frozenset({"role-7", "legacy-3"}), frozenset(),
                groups=frozenset({"team-7"}))  # fmt: skip
INVOICE = {"customer_id": "cus_8f3k2m9q", "amount": 250.5, "currency": "EUR", "memo": None}
GEN_PARAMS = {"amount": 250.5, "currency": "EUR", "account": "acct_42"}
GOAL_US = 100.0


class _Base(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


async def _noop(params: Any, ctx: Any) -> Any:
    return {}


def generated_tools(n: int) -> list[Tool]:
    """``n`` tools shaped like the demo's invoice tool (amount, currency, account)."""
    params: Any = create_model(
        "GenParams",
        __base__=_Base,
        amount=(Annotated[float, Field(gt=0)], ...),
        currency=(str, ...),
        account=(str, ...),
    )
    tiers = list(Tier)
    return [Tool(f"gen.tool_{i}", "generated", params, tiers[i % 4], f"target{i % 10}", _noop)
            for i in range(n)]  # fmt: skip


def generated_policies(tool_names: list[str]) -> str:
    """1,000 policies spread over ``tool_names`` (round robin)."""
    out = []
    for i in range(1000):
        tool = tool_names[i % len(tool_names)]
        kind = i % 5
        if kind == 4:
            out.append(f'@id("forbid-{i}")\nforbid (principal, action == Action::"{tool}", '
                       f'resource) when {{ context.agent has nats_user && '
                       f'context.agent.nats_user == "agent{i}" }};')  # fmt: skip
            continue
        limit = Decimal(100 + 37 * i).quantize(Decimal("0.1"))
        note = f'@approval("amount above {limit}")\n' if kind == 3 else ""
        op = "greaterThan" if kind == 3 else "lessThanOrEqual"
        out.append(f'@id("permit-{i}")\n{note}permit (principal, action == Action::"{tool}", '
                   f'resource) when {{ principal.roles.contains("role{i % 50}") && '
                   f'context.params.amount.{op}(decimal("{limit}")) }};')  # fmt: skip
    return "\n".join(out) + "\n"


def _dec(value: int) -> str:
    return f'decimal("{value}.0")'


def one_tool_policies(tool: str) -> tuple[str, list[str]]:
    """1,000 policies on ``tool``, as a policy of that size would name it, and what they are."""
    head = f'action == Action::"{tool}", resource'
    out: list[str] = []
    for k in range(200):  # per team: up to its limit, and above it with approval
        limit = 500 + 25 * k
        out.append(
            f'@id("team-{k}")\npermit (principal in Group::"team-{k}", {head}) '
            f"when {{ context.params.amount.lessThanOrEqual({_dec(limit)}) }};"
        )
        out.append(f'@id("team-{k}.large")\n@approval("above {limit}")\n@quorum("2")\n'
                   f'permit (principal in Group::"team-{k}", {head}) when {{ '
                   f"context.params.amount.greaterThan({_dec(limit)}) && "
                   f"context.params.amount.lessThanOrEqual({_dec(limit * 20)}) }};")  # fmt: skip
    for k in range(100):  # per role and currency
        for currency in ("EUR", "USD", "CHF"):
            out.append(
                f'@id("role-{k}.{currency}")\npermit (principal in Role::"role-{k}", '
                f'{head}) when {{ context.params.currency == "{currency}" && '
                f"context.params.amount.lessThanOrEqual({_dec(1000 + 10 * k)}) }};"
            )
    for k in range(200):  # per user: their own account
        out.append(
            f'@id("user-{k}")\npermit (principal == User::"user-{k}", {head}) '
            f'when {{ context.params.account == "acct_{k}" }};'
        )
    for k in range(80):  # the attribute form `policy convert` writes
        out.append(f'@id("legacy-{k}")\npermit (principal, {head}) when {{ principal.roles.'
                   f'contains("legacy-{k}") && context.params.amount.lessThanOrEqual('
                   f"{_dec(200 + k)}) }};")  # fmt: skip
    forbids = [f'context.agent has nats_user && context.agent.nats_user == "agent-{k}"'
               for k in range(10)]  # fmt: skip
    forbids += ["[" + ", ".join(f'"acct_blocked_{k}_{j}"' for j in range(20))
                + "].contains(context.params.account)" for k in range(5)]  # fmt: skip
    forbids += ["context.params.amount.greaterThan(decimal(\"1000000.0\"))",
                '!["EUR", "USD", "CHF"].contains(context.params.currency)',
                "context.time.hour == 2",
                'context.phase == "execute" && !context.proof',
                'context.agent has jkt && context.agent.jkt == "revoked-key"']  # fmt: skip
    out += [f'@id("forbid-{k}")\nforbid (principal, {head}) when {{ {c} }};'
            for k, c in enumerate(forbids)]  # fmt: skip
    about = [
        "400 per-team permits (principal in Group::\"team-N\", 200 teams: up to the team's "
        "limit, and above it with @approval and @quorum)",
        "300 per-role permits (principal in Role::\"role-N\", 100 roles x 3 currencies)",
        "200 per-user permits (principal == User::\"user-N\": their own account)",
        "80 permits in the attribute form (principal.roles.contains(\"legacy-N\") && amount)",
        f"{len(forbids)} forbids on any principal (10 agents, 5 blocked-account lists of 20, "
        "an amount cap, a currency list, a maintenance hour, a proof at execute, a key)",
    ]  # fmt: skip
    return "\n".join(out) + "\n", about


def _timed(fn: Callable[[], Any], n: int) -> list[int]:
    """CPU time of each call (this thread's: time the machine's other load takes from
    this process between two instants is not counted, unlike wall clock)."""
    clock = time.thread_time_ns
    times = []
    for _ in range(n):
        t0 = clock()
        fn()
        times.append(clock() - t0)
    return times


def _p50_p99(times: list[int]) -> tuple[float, float]:
    times = sorted(times)
    return statistics.median(times) / 1000, times[int(len(times) * 0.99)] / 1000


PHASES = ("authorize", "execute")
PARTITIONS = ("by action", "by action and principal")


@dataclass
class Row:
    """One set under one partition: its decisions per phase, and how many policies the
    measured caller's decision gives Cedar."""

    label: str
    partition: str
    total: int
    for_tool: int
    given: int
    ops: dict[str, Callable[[], Any]]
    samples: dict[str, list[int]] = field(default_factory=dict)

    def p50(self, phase: str) -> float:
        return _p50_p99(self.samples[phase])[0]


#: Distinct amounts cycled through: more than the answers a policy set keeps, so every
#: measured decision asks Cedar (the same question again is answered from memory).
DISTINCT = 2 * ANSWER_CACHE


def cycling(tool: Tool, params: dict[str, Any]) -> Callable[[], dict[str, Any]]:
    """Normalized params, a different amount each call (amount + 0.01 * k)."""
    base = tool.normalize(params)
    values = [{**base, "amount": round(base["amount"] + k / 100, 2)} for k in range(DISTINCT)]
    it = itertools.cycle(values)
    return lambda: next(it)


def rows_of(label: str, text: str, tools: list[Tool], tool: Tool, caller: Caller,
            params: dict[str, Any]) -> list[Row]:  # fmt: skip
    """The set partitioned by action only (before) and by action and principal (after)."""
    nxt = cycling(tool, params)
    agent = Agent(nats_user="agent", jkt=None, proof=True)
    out = []
    for partition in PARTITIONS:
        compiled = compile_policy(
            text, tools, PolicyDefaults(), by_principal=partition != "by action"
        )
        policy = Policy(compiled, tools)
        action = compiled.actions[tool.name]
        given = policies(compiled, view(compiled, caller), action)
        ops = {ph: (lambda p=policy, ph=ph: p.decide(caller, tool.name, nxt(), phase=ph,
                                                     agent=agent)) for ph in PHASES}  # fmt: skip
        out.append(Row(label, partition, len(compiled.ids), len(action.effects), len(given), ops))
    return out


def whole_set_op(text: str, tools: list[Tool], tool: Tool) -> Callable[[], Any]:
    """The 1,000 given whole to ``cedarpy.is_authorized`` with the same request."""
    policy = Policy(compile_policy(text, tools, PolicyDefaults()), tools)
    whole = cedarpy.PolicySet.from_str(text)
    action = policy.current.actions[tool.name]
    context = _context(action, tool.normalize(GEN_PARAMS), "authorize", Agent(nats_user="agent"))
    request = {"principal": {"type": "User", "id": ALICE.sub},
               "action": {"type": "Action", "id": tool.name},
               "resource": {"type": "Target", "id": tool.target}, "context": context}  # fmt: skip
    entities = view(policy.current, ALICE).entities
    return lambda: cedarpy.is_authorized(request, whole, entities)


def breakdown_ops(text: str, tools: list[Tool], tool: Tool,
                  caller: Caller) -> dict[str, Callable[[], Any]]:  # fmt: skip
    """Where the CPU of one decision of ``caller`` goes: the Cedar call with this request's
    context and no policy, then with the policies selected for the caller by principal,
    then with every policy selected (those on any principal too)."""
    compiled = compile_policy(text, tools, PolicyDefaults())
    action = compiled.actions[tool.name]
    prepared = view(compiled, caller)
    ids = action.index.selected(action.index.matched(prepared.keys))
    keyed = ids - action.index.always
    request = _request(action, caller, tool.normalize(GEN_PARAMS), "execute",
                       Agent(nats_user="agent", proof=True))  # fmt: skip
    sets = {"no policy": frozenset(), f"{len(keyed)} selected by principal": keyed,
            f"those + {len(ids) - len(keyed)} on any principal": ids}  # fmt: skip
    parsed = {k: cedarpy.PolicySet.from_json_str(action.index.document(v)) for k, v in sets.items()}
    return {k: (lambda c=c: authorize(request, c, prepared.entities)) for k, c in parsed.items()}


def run(probes: dict[Any, Callable[[], Any]], n: int, rounds: int = 10) -> dict[Any, list[int]]:
    """Every probe, ``n`` times, in ``rounds`` alternating slices: all see the same machine."""
    samples: dict[Any, list[int]] = {k: [] for k in probes}
    for fn in probes.values():
        _timed(fn, 20)  # warm: the first call parses the caller's entities and policy set
    for _ in range(rounds):
        for key, fn in probes.items():
            samples[key] += _timed(fn, max(n // rounds, 1))
    return samples


def print_rows(rows: list[Row]) -> None:
    print("  set                    policies (for the tool)  partition                "
          "given to Cedar   " + "   ".join(f"{ph:<30}" for ph in PHASES))  # fmt: skip
    for r in rows:
        cells = []
        for ph in PHASES:
            p50, p99 = _p50_p99(r.samples[ph])
            cells.append(f"p50 {p50:7.1f} µs  p99 {p99:7.1f} µs")
        print(f"  {r.label:<22} {r.total:>5} ({r.for_tool:>4})            {r.partition:<24} "
              f"{r.given:>5}            " + "   ".join(cells))  # fmt: skip


def verdict(rows: list[Row]) -> None:
    after = [r for r in rows if r.total >= 1000 and r.partition == PARTITIONS[1]]
    worst = max((r.p50(ph), r.label, ph) for r in after for ph in PHASES)
    ok = worst[0] <= GOAL_US
    print(
        f"\ngoal: p50 <= {GOAL_US:.0f} µs per phase, 1,000 policies: "
        f"{'PASS' if ok else 'MISS'} (worst p50 {worst[0]:.1f} µs: {worst[1]}, {worst[2]})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=3000, help="decisions per measurement")
    n = parser.parse_args().n
    invoice = next(t for t in TOOLS if t.name == "payments.create_invoice")
    tools = generated_tools(200)
    spread_text = generated_policies([t.name for t in tools])
    one_text, about = one_tool_policies(tools[7].name)
    rows = rows_of("demo, create_invoice", (DEMO / "policy.cedar").read_text(), TOOLS, invoice,
                   ALICE, INVOICE)  # fmt: skip
    rows += rows_of("1000 over 200 tools", spread_text, tools, tools[7], ALICE, GEN_PARAMS)
    rows += rows_of("1000 on one tool", one_text, tools, tools[7], MEMBER, GEN_PARAMS)
    probes: dict[Any, Callable[[], Any]] = {(i, ph): r.ops[ph] for i, r in enumerate(rows)
                                            for ph in PHASES}  # fmt: skip
    probes["whole"] = whole_set_op(spread_text, tools, tools[7])
    kept = Policy(compile_policy(one_text, tools, PolicyDefaults()), tools)
    same = tools[7].normalize(GEN_PARAMS)
    probes["kept"] = lambda: kept.decide(MEMBER, tools[7].name, same, phase="execute")
    parts = breakdown_ops(one_text, tools, tools[7], MEMBER)
    probes.update({("part", k): fn for k, fn in parts.items()})
    samples = run(probes, n)
    for i, r in enumerate(rows):
        r.samples = {ph: samples[(i, ph)] for ph in PHASES}
    print("policy evaluation cost per phase (CPU time of one decision; lower is better)")
    print_rows(rows)
    p50, p99 = _p50_p99(samples["whole"])
    print(f"  {'cedarpy.is_authorized':<22} {1000:>5} (whole set, no partition)              "
          f"{1000:>5}            one call  p50 {p50:7.1f} µs  p99 {p99:7.1f} µs")  # fmt: skip
    print(
        f"\nthe 1000 on one tool ({tools[7].name}); the caller {MEMBER.sub} (roles "
        f"{', '.join(sorted(MEMBER.roles))}; group {', '.join(sorted(MEMBER.groups))}):"
    )
    for line in about:
        print(f"  {line}")
    cells = [f"{k} {_p50_p99(samples[('part', k)])[0]:.1f} µs" for k in parts]
    print(f"  its Cedar call alone (execute, p50): {'; '.join(cells)}")
    p50, p99 = _p50_p99(samples["kept"])
    print(f"  the same question again (Cedar's answer kept): p50 {p50:.1f} µs, p99 {p99:.1f} µs")
    verdict(rows)


if __name__ == "__main__":
    main()
