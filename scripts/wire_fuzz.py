"""Bounded wire fuzzer: N mutated requests at the agent subjects of a running `up` stack.

The team's fuzzer, adapted to the bus's permission model: it connects as the dev
stack's default agent identity (user, password file and inbox prefix from stack.json).

usage: .venv/bin/python scripts/wire_fuzz.py . [N] [CONCURRENCY]   (from the project root)
Starts `mcp-handshake up` in a temp home (its own servers), mints a session, then sends N requests
built by mutating valid authorize/execute/tools/status bodies and headers (random bytes, deep nesting,
huge numbers, wrong types, unicode, bad JWTs, oversized headers). Counts replies by error code;
'internal' replies, timeouts, and dead worker processes are failures. Ends with a valid call.
Prints 'N passed, M failed' over its three checks.
"""
from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import nats

PROJECT = Path(sys.argv[1]).resolve()
N = int(sys.argv[2]) if len(sys.argv) > 2 else 100_000
C = int(sys.argv[3]) if len(sys.argv) > 3 else 64
CLI = str(PROJECT / ".venv" / "bin" / "mcp-handshake")
rng = random.Random(int(os.environ.get("FUZZ_SEED", "7")))

VALID = [
    ("authorize", {"tool": "payments.get_exchange_rate", "params": {"base": "EUR", "quote": "USD"}}),
    ("authorize", {"tool": "payments.create_invoice", "params": {"customer_id": "cus_8f3k2m9q", "amount": 250, "currency": "EUR"}}),
    ("authorize", {"tool": "reports.run_query", "params": {"query": "sum(amount) where currency == 'EUR'"}}),
    ("execute", {"transaction_id": "txn_x", "tool": "payments.get_exchange_rate", "params": {"base": "EUR", "quote": "USD"}}),
    ("tools", {}),
    ("status", {"transaction_id": "txn_x", "wait_s": 0}),
]
WEIRD = [None, True, -1, 0, 2**64 + 1, -2**63, 1e308, -0.0, "", "\x00", "\u202e", "A" * 5000, "é" * 10, [], {},
         [[[[[]]]]], {"$ne": 1}, "../../etc/passwd", "' OR 1=1 --", "__import__('os')", "NaN", "Infinity", "\ud800"]


def mutate_value(v, depth=0):
    r = rng.random()
    if r < 0.3:
        return rng.choice(WEIRD)
    if isinstance(v, dict) and depth < 4:
        v = dict(v)
        if v and rng.random() < 0.5:
            k = rng.choice(list(v))
            v[k] = mutate_value(v[k], depth + 1)
        if rng.random() < 0.2:
            v[rng.choice(["extra", "__proto__", "tool", "params", "x" * 300])] = rng.choice(WEIRD)
        if v and rng.random() < 0.2:
            v.pop(rng.choice(list(v)))
        return v
    return v


def body_bytes(kind, body) -> bytes:
    r = rng.random()
    if r < 0.08:
        return os.urandom(rng.randint(0, 300))
    if r < 0.12:
        d = rng.randint(50, 30000)
        return b"[" * d + b"]" * d
    if r < 0.15:
        return b'{"tool": "payments.get_exchange_rate", "params": {"base": "\xff\xfe", "quote": "USD"}}'
    if r < 0.18:
        return b'{"tool":"a","tool":"payments.get_exchange_rate","params":{"base":"EUR","quote":"USD","base":"GBP"}}'
    if r < 0.20:
        return json.dumps(body).encode()[: rng.randint(0, 40)]
    try:
        return json.dumps(mutate_value(body), ensure_ascii=rng.random() < 0.5).encode("utf-8", "surrogatepass")
    except Exception:
        return b"{}"


def headers(session: str):
    r = rng.random()
    if r < 0.5:
        h = {"Authorization": f"Bearer {session}"}
    elif r < 0.6:
        h = {"Authorization": "Bearer " + session[:-5] + "AAAAA"}
    elif r < 0.7:
        h = {"Authorization": "Bearer " + "eyJ" + "A" * rng.randint(10, 20000)}
    elif r < 0.75:
        h = {"Authorization": "Basic Zm9vOmJhcg=="}
    elif r < 0.8:
        h = {}
    else:
        h = {"Authorization": f"Bearer {session}", "traceparent": rng.choice(["00-zz-1-01", "x" * 600, "00-" + "0" * 32 + "-" + "0" * 16 + "-01"]),
             "Handshake-Transaction-Token": rng.choice(["", "A" * 43, "\u00e9" * 10, "x" * 4000]),
             "Handshake-Proof": rng.choice(["", "a.b.c", "eyJhbGciOiJub25lIn0.e30."])}
    return h


async def main():
    home = Path(tempfile.mkdtemp(prefix="hs-fuzz-"))
    env = dict(os.environ, HANDSHAKE_HOME=str(home), HANDSHAKE_LOG_LEVEL="WARNING")
    for k in ("HANDSHAKE_NATS_URL", "HANDSHAKE_REDIS_URL"):
        env.pop(k, None)
    up = subprocess.Popen([CLI, "up"], env=env, cwd=home, stdout=open(home / "up.log", "w"), stderr=subprocess.STDOUT,
                          start_new_session=True)
    try:
        for _ in range(120):
            if (home / "stack.json").exists():
                break
            await asyncio.sleep(0.5)
        await asyncio.sleep(2)
        stack = json.loads((home / "stack.json").read_text())
        url = stack["nats_url"]
        user = stack["nats_user"]
        password = Path(stack["nats_password_file"]).read_text().strip()
        session = subprocess.run([CLI, "token", "mint", "--sub", "alice", "--role", "billing"], env=env,
                                 capture_output=True, text=True, check=True).stdout.strip()
        kids = subprocess.run(["pgrep", "-P", str(up.pid)], capture_output=True, text=True).stdout.split()
        nc = await nats.connect(url, max_reconnect_attempts=3, user=user, password=password,
                                inbox_prefix=f"_INBOX.{user}")
        codes: Counter[str] = Counter()
        sent = 0
        internal_samples = []
        t0 = time.time()

        async def one():
            kind, body = rng.choice(VALID)
            data = body_bytes(kind, body)
            try:
                msg = await nc.request(f"handshake.v1.{kind}", data, timeout=10, headers=headers(session))
                code = (msg.headers or {}).get("Nats-Service-Error", "ok")
                codes[code] += 1
                if code == "internal" and len(internal_samples) < 5:
                    internal_samples.append((kind, data[:120]))
            except nats.errors.TimeoutError:
                codes["TIMEOUT"] += 1
            except nats.errors.NoRespondersError:
                codes["NO_RESPONDERS"] += 1
            except Exception as e:  # noqa: BLE001
                codes["client:" + type(e).__name__] += 1

        async def worker(n):
            nonlocal sent
            for _ in range(n):
                await one()
                sent += 1

        await asyncio.gather(*(worker(N // C) for _ in range(C)))
        dt = time.time() - t0
        alive = [k for k in kids if Path(f"/proc/{k}").exists()]
        print(f"sent {sent} fuzzed requests in {dt:.0f}s ({sent/dt:.0f}/s); replies by code: {dict(codes.most_common())}")
        for s in internal_samples:
            print("  internal on", s)
        msg = await nc.request("handshake.v1.authorize", json.dumps(VALID[0][1]).encode(), timeout=10,
                               headers={"Authorization": f"Bearer {session}"})
        ok_after = not (msg.headers or {}).get("Nats-Service-Error")
        checks = [("no internal replies", codes["internal"] == 0), ("no timeouts / no responders", codes["TIMEOUT"] + codes["NO_RESPONDERS"] == 0),
                  (f"all {len(kids)} stack processes alive and a valid authorize works after", len(alive) == len(kids) and ok_after)]
        for name, ok in checks:
            print(("PASS " if ok else "FAIL ") + name)
        p = sum(ok for _, ok in checks)
        print(f"{p} passed, {len(checks) - p} failed")
        await nc.close()
        return 0 if p == len(checks) else 1
    finally:
        os.killpg(up.pid, signal.SIGINT)
        try:
            up.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(up.pid, signal.SIGKILL)


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
