"""What the 20 forbids of ``policy_eval.py``'s 1,000-on-one-tool set cost Cedar, written
as generated and written otherwise with the same meaning, and the request's forms.

    python bench/forbid_forms.py

One Cedar call per probe (``prepared.authorize``, as a decision makes it) with the
measured caller's request at execute, the 7 policies selected for it by principal, and
the forbids in each form; CPU time p50 over alternating slices. Every form gives the same
decision (printed first). Cedar is the only evaluator in every form.
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cedarpy
import msgspec

from mcp_handshake.services.core.config import PolicyDefaults
from mcp_handshake.services.policy import Agent
from mcp_handshake.services.policy.compiled import compile_policy
from mcp_handshake.services.policy.evaluate import _request
from mcp_handshake.services.policy.prepared import _direct, authorize, view

sys.path.insert(0, str(Path(__file__).resolve().parent))
import policy_eval as pe  # the bench beside this file: its generated set and caller

TOOLS = pe.generated_tools(200)
TOOL = TOOLS[7]
HEAD = f'action == Action::"{TOOL.name}", resource'
AGENTS = [f'"agent-{k}"' for k in range(10)]
BLOCKED = [[f'"acct_blocked_{k}_{j}"' for j in range(20)] for k in range(5)]
OTHERS = ['context.params.amount.greaterThan(decimal("1000000.0"))',
          '!["EUR", "USD", "CHF"].contains(context.params.currency)', "context.time.hour == 2",
          'context.phase == "execute" && !context.proof',
          'context.agent has jkt && context.agent.jkt == "revoked-key"']  # fmt: skip
_AGENT = "context.agent has nats_user && "


def forbid(condition: str) -> str:
    return f"forbid (principal, {HEAD}) when {{ {condition} }};"


def forms() -> dict[str, list[str]]:
    one_agent = _AGENT + f"[{', '.join(AGENTS)}].contains(context.agent.nats_user)"
    one_list = f"[{', '.join(a for b in BLOCKED for a in b)}].contains(context.params.account)"
    return {
        "10 agent forbids (as generated)": [forbid(_AGENT + f"context.agent.nats_user == {a}")
                                            for a in AGENTS],
        "1 agent forbid, a set of 10": [forbid(one_agent)],
        "5 block lists of 20 (as generated)": [
            forbid(f"[{', '.join(b)}].contains(context.params.account)") for b in BLOCKED],
        "1 block list of 100": [forbid(one_list)],
        "100 block forbids, ==": [forbid(f"context.params.account == {a}")
                                  for b in BLOCKED for a in b],
        "the 5 others": [forbid(c) for c in OTHERS],
        "1 agent + 1 list + 5 others (7 forbids)": [forbid(one_agent), forbid(one_list),
                                                    *(forbid(c) for c in OTHERS)],
        "all 20 as one forbid (||)": [forbid(" || ".join(
            f"({c})" for c in (one_agent, one_list, *OTHERS)))],
    }  # fmt: skip


def main() -> None:
    text, _ = pe.one_tool_policies(TOOL.name)
    compiled = compile_policy(text, TOOLS, PolicyDefaults())
    action = compiled.actions[TOOL.name]
    prepared = view(compiled, pe.MEMBER)
    ids = action.index.selected(action.index.matched(prepared.keys))
    keyed = ids - action.index.always
    request = _request(action, pe.MEMBER, TOOL.normalize(pe.GEN_PARAMS), "execute",
                       Agent(nats_user="agent", proof=True))  # fmt: skip

    def parsed(extra: list[str], keep: frozenset[str]) -> Any:
        doc = msgspec.json.decode(action.index.document(keep))
        if extra:
            est = msgspec.json.decode(cedarpy.policies_to_json_str("\n".join(extra)))
            doc["staticPolicies"].update({f"x{k}": v for k, v in est["staticPolicies"].items()})
        return cedarpy.PolicySet.from_json_str(msgspec.json.encode(doc).decode())

    sets = {"no policy": parsed([], frozenset()), "7 selected by principal": parsed([], keyed),
            "7 + the 20 forbids as generated": parsed([], ids)}  # fmt: skip
    sets.update({f"7 + {k}": parsed(v, keyed) for k, v in forms().items()})
    probes: dict[str, Callable[[], Any]] = {
        k: (lambda s=s: authorize(request, s, prepared.entities)) for k, s in sets.items()
    }
    inner = prepared.entities._inner
    as_text = {
        **request,
        "principal": f'User::"{pe.MEMBER.sub}"',
        "action": f'Action::"{TOOL.name}"',
        "resource": f'Target::"{TOOL.target}"',
    }
    if _direct is not None:  # the request's entity uids as text rather than records
        probes["no policy, uids as text"] = lambda: _direct(as_text, sets["no policy"], inner,
                                                            None, False)  # fmt: skip
    for k, s in sets.items():
        allowed = authorize(request, s, prepared.entities)[0]
        print(f"  {k:<48} decision: {'allow' if allowed else 'deny'}")
    samples: dict[str, list[int]] = {k: [] for k in probes}
    for fn in probes.values():
        for _ in range(50):
            fn()
    for _ in range(10):
        for k, fn in probes.items():
            for _ in range(300):
                t0 = time.thread_time_ns()
                fn()
                samples[k].append(time.thread_time_ns() - t0)
    print("Cedar's call, CPU p50:")
    for k, v in samples.items():
        print(f"  {k:<48} {statistics.median(v) / 1000:7.1f} µs")


if __name__ == "__main__":
    main()
