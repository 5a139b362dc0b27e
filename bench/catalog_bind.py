"""The bind step (validate, normalize, hash, plan) of a catalog tool beside a Python one.

The demo's tools are a catalog (``payments.catalog.yaml``); ``python_tools.py`` here
keeps their former Python definitions. Both bind the same params under the demo
policy's decision for them (taken once: the bind step itself is measured, not Cedar's
evaluation, which bench/policy_eval.py prints); the catalog's cost may be at most 20% more
(issue 20).

    .venv/bin/python bench/catalog_bind.py [--rounds N]
"""

from __future__ import annotations

import argparse
import sys
import time
from importlib import resources
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import python_tools

from mcp_handshake.services.core.bind import bind
from mcp_handshake.services.core.policy import Caller, Rules
from mcp_handshake.services.core.tools import Tool
from mcp_handshake.services.dev.demo.tools import TOOLS
from mcp_handshake.services.policy import load_policy

CALLS: dict[str, dict[str, Any]] = {
    "payments.get_exchange_rate": {"base": "EUR", "quote": "USD"},
    "payments.list_invoices": {"status": "open", "limit": "20"},
    "payments.create_invoice": {"customer_id": "cus_8f3k2m9q", "amount": "250.50",
                                "currency": "EUR", "memo": "March"},
    "payments.send_payment": {"to_account": "acct_4f9d2a", "amount": 120, "currency": "EUR"},
}  # fmt: skip
LIMIT = 1.20


def per_call_us(tool: Tool, raw: dict[str, Any], rules: Rules, rounds: int) -> float:
    """Best of five runs of ``rounds`` binds, in microseconds per bind."""
    best = float("inf")
    decided = lambda _params: rules  # noqa: E731
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(rounds):
            bind(tool, raw, decided)
        best = min(best, time.perf_counter() - start)
    return best / rounds * 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5000)
    args = parser.parse_args()
    policy_file = resources.files("mcp_handshake.services.dev.demo").joinpath("policy.cedar")
    policy = load_policy(Path(str(policy_file)), TOOLS)
    caller = Caller("bench", frozenset({"billing", "treasury", "support", "analyst"}), frozenset())
    python = {t.name: t for t in python_tools.TOOLS}
    catalog = {t.name: t for t in TOOLS}
    print(f"{'tool':30} {'python µs':>10} {'catalog µs':>11} {'ratio':>6}")
    worst = 0.0
    for name, raw in CALLS.items():
        params = catalog[name].normalize(raw)
        rules = policy.decide(caller, name, params, phase="authorize")
        assert rules is not None, name
        ph = bind(python[name], raw, lambda _p: rules).ph  # noqa: B023
        assert ph == bind(catalog[name], raw, lambda _p: rules).ph, name  # noqa: B023
        py = per_call_us(python[name], raw, rules, args.rounds)
        cat = per_call_us(catalog[name], raw, rules, args.rounds)
        worst = max(worst, cat / py)
        print(f"{name:30} {py:10.2f} {cat:11.2f} {cat / py:6.2f}")
    verdict = "within" if worst <= LIMIT else "OVER"
    print(f"worst ratio {worst:.2f}: {verdict} the {LIMIT:.2f} limit")
    return 0 if worst <= LIMIT else 1


if __name__ == "__main__":
    sys.exit(main())
