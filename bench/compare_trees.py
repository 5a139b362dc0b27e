"""CPU per handshake and throughput of two source trees, side by side, interleaved.

    git archive <commit> | tar -x -C /tmp/old
    python bench/compare_trees.py /tmp/old . --rounds 4 --concurrency 16 64 --seconds 10

Runs each tree's own ``bench/cpu_breakdown.py`` on the function-target tool
(``bench.exchange_rate``, as ``handshake.py`` runs it) with ``PYTHONPATH`` pointing at
that tree (its workers, its client, its stack and bench config), in the order A, B, B,
A, ... per concurrency, so that both trees see the same minutes of a noisy machine;
with ``--together``, A and B at the same time, each with its own stack, sharing the
cores (each pair then saw the same machine; the throughput ratio is that of the CPU
each handshake needs).
Prints every run, then per concurrency the median of each tree's runs, the ratio
B/A of those medians, and the median of the ratios of the runs taken next to each
other (run i of A with run i of B): CPU per handshake per process (utime+stime from
``/proc`` over the measured window, divided by the handshakes done) and handshakes/s.
nats-server and redis-server do the same work in both trees: their ratios show how
much the machine moved between the runs.

``--new-questions`` makes every policy decision a question never asked before, as
when policies read params that differ on every call (amounts): each worker process
then forgets Cedar's answers (``ANSWER_CONTEXT_MAX = -1`` in ``policy.prepared``,
set by a ``sitecustomize`` put first on ``PYTHONPATH``; a tree without that module,
such as the code before Cedar, is left as it is). ``--forbids`` adds 20 forbids on any
principal to the bench tool's policy (as ``bench/policy_eval.py``'s 1,000 on one tool
hold: excluded agents, block lists, a key), so each Cedar call costs what a larger
policy's does; for trees whose policy is Cedar.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

_RATE = re.compile(r"^(\d+) handshakes/s")
_PROC = re.compile(r"^\s+(\S+(?: \S+)?)\s+[\d.]+% cpu\s+(\d+) us/(?:handshake|op)")
WORKERS = ("authorize-0", "execute-0", "executor-0", "audit-0", "nats-server",
           "redis-server", "client", "all")  # fmt: skip
#: Run first in every Python process of a ``--new-questions`` run (see the docstring).
_FORGET = """\
try:
    import mcp_handshake.services.policy.prepared as _prepared
except ImportError:
    pass
else:
    _prepared.ANSWER_CONTEXT_MAX = -1
"""
#: ``--forbids``: the bench tool's policy gets these too (on any principal, reading the
#: params, the agent and the time, not the phase: Cedar evaluates them on every call).
_FORBIDS = [f'context.agent has nats_user && context.agent.nats_user == "agent-{k}"'
            for k in range(10)]  # fmt: skip
_FORBIDS += ["[" + ", ".join(f'"X{k}{j:02d}"' for j in range(20))
             + "].contains(context.params.base)" for k in range(5)]  # fmt: skip
_FORBIDS += ['context.params.base == context.params.quote', 'context.time.hour == 25',
             '["XAU", "XAG", "XPT"].contains(context.params.quote)',
             'context.params.quote == "XXX"',
             'context.agent has jkt && context.agent.jkt == "revoked-key"']  # fmt: skip
_HEAVY = """\
import os, sys
sys.path.insert(0, os.path.join(os.getcwd(), "bench"))
try:
    import benchtools
except ImportError:
    pass
else:
    benchtools.POLICY += {policies!r}
"""


def _heavy() -> str:
    return "".join(f'\n@id("bench.forbid-{k}")\nforbid (principal, action == '
                   f'Action::"bench.exchange_rate", resource) when {{ {c} }};\n'
                   for k, c in enumerate(_FORBIDS))  # fmt: skip


def _sitecustomize(forget: bool, forbids: bool) -> Path | None:
    """A directory holding the ``sitecustomize`` of ``--new-questions`` and ``--forbids``."""
    if not (forget or forbids):
        return None
    folder = Path(tempfile.mkdtemp(prefix="compare-trees-"))
    text = (_FORGET if forget else "") + (_HEAVY.format(policies=_heavy()) if forbids else "")
    (folder / "sitecustomize.py").write_text(text)
    return folder


def start(
    tree: Path, concurrency: int, seconds: float, first: Path | None = None
) -> subprocess.Popen[str]:
    """A cpu_breakdown run of ``tree`` (its own code, stack and bench config); ``first``:
    a directory put before it on ``PYTHONPATH``."""
    tree = tree.resolve()
    parts = [tree / part for part in ("services", "shared", "client")]
    path = os.pathsep.join(str(p) for p in ([first] if first else []) + parts)
    cmd = [sys.executable, str(tree / "bench" / "cpu_breakdown.py"), "--tool",
           "bench.exchange_rate", "--seconds", str(seconds),
           "--concurrency", str(concurrency)]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": path}
    return subprocess.Popen(cmd, env=env, cwd=tree, stdout=subprocess.PIPE, text=True)


def result(proc: subprocess.Popen[str]) -> dict[str, float]:
    """{process: µs of CPU per handshake, "rate": handshakes per s} of a finished run."""
    out, _ = proc.communicate(timeout=600)
    if proc.returncode:
        raise SystemExit(f"cpu_breakdown.py failed ({proc.returncode})")
    found: dict[str, float] = {}
    for line in (out or "").splitlines():
        if m := _RATE.match(line):
            found["rate"] = float(m.group(1))
        elif m := _PROC.match(line):
            name = "client" if m.group(1) == "bench client" else m.group(1)  # older trees
            found[name] = float(m.group(2))
    # Every process's CPU per handshake, summed here (older trees print no total).
    found["all"] = sum(v for k, v in found.items() if k not in ("rate", "all"))
    return found


def _row(label: str, values: dict[str, float]) -> str:
    cells = "  ".join(f"{values.get(w, float('nan')):>8.0f}" for w in WORKERS)
    return f"  {label:<28} {values.get('rate', float('nan')):>7.0f}/s  {cells}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("a", type=Path, help="tree A (e.g. the old code)")
    parser.add_argument("b", type=Path, help="tree B (e.g. the new code)")
    parser.add_argument("--rounds", type=int, default=4, help="A/B pairs per concurrency")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[16, 64])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument(
        "--together",
        action="store_true",
        help="run A and B at the same time (each its own stack), not in turn",
    )
    parser.add_argument(
        "--new-questions",
        action="store_true",
        help="every policy decision a question not asked before (workers keep no answer)",
    )
    parser.add_argument(
        "--forbids",
        action="store_true",
        help="20 forbids on any principal added to the bench tool's policy",
    )
    args = parser.parse_args()
    first = _sitecustomize(args.new_questions, args.forbids)
    trees = {"A": args.a, "B": args.b}
    header = "  ".join(f"{w[:8]:>8}" for w in WORKERS)
    print(f"  {'run':<28} {'rate':>9}  {header}   (µs of CPU per handshake)")
    runs: dict[tuple[int, str], list[dict[str, float]]] = {}
    for c in args.concurrency:
        for r in range(args.rounds):
            order = "AB" if r % 2 == 0 else "BA"  # A B, B A, A B, ...
            batches = [order] if args.together else list(order)  # together: one batch
            for batch in batches:
                procs = {n: start(trees[n], c, args.seconds, first) for n in batch}
                for n, proc in procs.items():
                    got = result(proc)
                    runs.setdefault((c, n), []).append(got)
                    label = f"c={c} {n} ({trees[n].resolve().name}) #{r + 1}"
                    print(_row(label, got), flush=True)
    print("\nmedians and B/A:")
    for c in args.concurrency:
        med = {n: {k: statistics.median(run[k] for run in runs[(c, n)] if k in run)
                   for k in ("rate", *WORKERS)} for n in "AB"}  # fmt: skip
        for n in "AB":
            print(_row(f"c={c} {n} median", med[n]))
        ratio = {k: med["B"][k] / med["A"][k] for k in med["A"] if med["A"][k]}
        cells = "  ".join(f"{ratio.get(w, float('nan')):>8.3f}" for w in WORKERS)
        print(f"  {'c=' + str(c) + ' B/A of medians':<28} {ratio['rate']:>8.3f}x  {cells}")
        pairs = list(zip(runs[(c, "A")], runs[(c, "B")], strict=False))  # run i of each
        paired = {k: statistics.median(b[k] / a[k] for a, b in pairs if a.get(k) and k in b)
                  for k in ("rate", *WORKERS)}  # fmt: skip
        cells = "  ".join(f"{paired[w]:>8.3f}" for w in WORKERS)
        print(f"  {'c=' + str(c) + ' B/A, median of pairs':<28} {paired['rate']:>8.3f}x  {cells}")


if __name__ == "__main__":
    main()
