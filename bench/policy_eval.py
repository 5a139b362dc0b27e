"""Policy evaluation cost per phase: one Cedar decision, as authorize and execute take it.

    python bench/policy_eval.py [--n 3000]

Sets measured (each a decision at authorize and one at execute, p50 and p99 in µs):

- ``demo``: the demo policy (services/.../dev/demo/policy.cedar) on its tools;
- ``1000 over 200 tools``: 1,000 generated policies (permits on roles and amounts,
  forbids on agents and action groups) over a catalog of 200 generated tools: the
  partition by action leaves each decision a handful of policies;
- ``1000 on one tool``: the same 1,000 policies all naming the measured tool (the
  worst case for the partition);
- ``cedarpy, whole set``: the 1,000-policy set given whole to ``cedarpy.is_authorized``
  with the same request, for comparison (what the partition avoids).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
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
from mcp_handshake.services.policy.evaluate import _context, _entities

DEMO = Path(__file__).resolve().parent.parent / "services/mcp_handshake/services/dev/demo"
ALICE = Caller("alice", frozenset({"billing", "role7"}), frozenset({"payments:write"}))
INVOICE = {"customer_id": "cus_8f3k2m9q", "amount": 250.5, "currency": "EUR", "memo": None}


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


def measure(fn: Callable[[], Any], n: int) -> tuple[float, float]:
    for _ in range(min(200, n)):
        fn()
    times = []
    for _ in range(n):
        t0 = time.perf_counter_ns()
        fn()
        times.append(time.perf_counter_ns() - t0)
    times.sort()
    return statistics.median(times) / 1000, times[int(len(times) * 0.99)] / 1000


def row(label: str, policy: Policy, tool: Tool, params: dict[str, Any], n: int) -> None:
    normalized = tool.normalize(params)
    agent = Agent(nats_user="agent", jkt=None, proof=True)
    cells = []
    for phase in ("authorize", "execute"):
        p50, p99 = measure(lambda ph=phase: policy.decide(ALICE, tool.name, normalized,  # type: ignore[misc]
                                                          phase=ph, agent=agent), n)  # fmt: skip
        cells.append(f"{phase} p50 {p50:7.1f} µs  p99 {p99:7.1f} µs")
    count = len(policy.current.actions[tool.name].effects)
    print(f"{label:<34} {len(policy.current.ids):>5} policies ({count:>4} for the tool)  "
          + "   ".join(cells))  # fmt: skip


def whole_set_row(policy: Policy, text: str, tool: Tool, params: dict[str, Any], n: int) -> None:
    whole = cedarpy.PolicySet.from_str(text)
    action = policy.current.actions[tool.name]
    context = _context(action, tool.normalize(params), "authorize", Agent(nats_user="agent"))
    request = {"principal": {"type": "User", "id": ALICE.sub},
               "action": {"type": "Action", "id": tool.name},
               "resource": {"type": "Target", "id": tool.target}, "context": context}  # fmt: skip
    entities = _entities(policy.current, ALICE)
    p50, p99 = measure(lambda: cedarpy.is_authorized(request, whole, entities), n)
    print(f"{'cedarpy.is_authorized, whole set':<34} {1000:>5} policies (no partition)       "
          f"    one call p50 {p50:7.1f} µs  p99 {p99:7.1f} µs")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=3000, help="decisions per measurement")
    n = parser.parse_args().n
    defaults = PolicyDefaults()
    demo = Policy(compile_policy((DEMO / "policy.cedar").read_text(), TOOLS, defaults), TOOLS)
    invoice = next(t for t in TOOLS if t.name == "payments.create_invoice")
    print("policy evaluation cost per phase (one decision; lower is better)")
    row("demo policy, create_invoice", demo, invoice, INVOICE, n)
    tools = generated_tools(200)
    gen_params = {"amount": 250.5, "currency": "EUR", "account": "acct_1"}
    text = generated_policies([t.name for t in tools])
    spread = Policy(compile_policy(text, tools, defaults), tools)
    row("1000 policies over 200 tools", spread, tools[7], gen_params, n)
    text_one = generated_policies([tools[7].name])
    one = Policy(compile_policy(text_one, tools, defaults), tools)
    row("1000 policies on one tool", one, tools[7], gen_params, max(n // 10, 100))
    whole_set_row(spread, text, tools[7], gen_params, max(n // 10, 100))


if __name__ == "__main__":
    main()
