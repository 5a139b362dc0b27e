"""One client call yields one trace spanning every hop, named per the messaging conventions."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import uuid
from pathlib import Path

from mcp_handshake.shared.tracing import valid_traceparent
from tests.conftest import Raw

ROOT = Path(__file__).resolve().parent.parent


def test_one_call_is_one_trace_across_every_hop_and_is_measured(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HANDSHAKE_LOG_LEVEL": "WARNING"}
    out = subprocess.run(
        [sys.executable, "-m", "tests.support.trace_probe", str(tmp_path / "home")],
        env=env, capture_output=True, text=True, timeout=90, check=False, cwd=ROOT,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads(out.stdout.strip().splitlines()[-1])
    spans = report["spans"]
    names = [s["name"] for s in spans]
    assert len({s["trace_id"] for s in spans}) == 1, names
    expected = {
        "handshake payments.list_invoices",
        "send handshake.v1.authorize",
        "process handshake.v1.authorize",
        "send handshake.v1.execute",
        "process handshake.v1.execute",
        "send handshake.internal.executor.payments",
        "process handshake.internal.executor.payments",
        "GET",
    }
    assert expected <= set(names), names
    assert not any("_INBOX" in n for n in names)
    for s in spans:
        if s["name"].startswith(("send ", "process ")):
            attrs = s["attributes"]
            assert attrs["messaging.system"] == "nats"
            assert attrs["messaging.destination.name"] == s["name"].split(" ", 1)[1]
    by_name = {s["name"]: s for s in spans}
    for hop in (
        "process handshake.v1.authorize",
        "process handshake.v1.execute",
        "process handshake.internal.executor.payments",
    ):
        assert by_name[hop]["attributes"]["handshake.transaction_id"] == report["txn"]
    http = by_name["GET"]["attributes"]
    assert http["url.template"] == "/v1/invoices" and http["http.response.status_code"] == 200

    points = report["metrics"]

    def value(name: str, **attrs: str) -> float:
        return sum(
            p["value"]
            for p in points
            if p["name"] == name and all(p["attributes"].get(k) == v for k, v in attrs.items())
        )

    for endpoint in ("authorize", "execute", "executor-payments"):
        assert value("handshake.requests", endpoint=endpoint, outcome="ok") >= 1, endpoint
        assert value("handshake.request.duration", endpoint=endpoint) >= 1, endpoint
    assert value("handshake.tokens", event="issued") == 1
    assert value("handshake.tokens", event="consumed") == 1


TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "00f067aa0ba902b7"


def test_traceparent_is_validated_against_the_w3c_format() -> None:
    good = f"00-{TRACE}-{PARENT}-01"
    assert valid_traceparent(good) == good
    assert valid_traceparent(f"00-{TRACE}-{PARENT}-00") == f"00-{TRACE}-{PARENT}-00"
    # a later version: its first four fields, passed on as version 00
    assert valid_traceparent(f"cc-{TRACE}-{PARENT}-01-later") == good
    assert valid_traceparent(f"01-{TRACE}-{PARENT}-01") == good
    bad = [
        None,
        "",
        f"ff-{TRACE}-{PARENT}-01",  # version ff is invalid
        f"00-{'0' * 32}-{PARENT}-01",  # all-zero trace id
        f"00-{TRACE}-{'0' * 16}-01",  # all-zero parent id
        f"00-{TRACE.upper()}-{PARENT}-01",  # uppercase hex
        f"00-{TRACE}-{PARENT.upper()}-01",
        f"0A-{TRACE}-{PARENT}-01",
        f"00-{TRACE}-{PARENT}-0F",
        f"00-{TRACE}-{PARENT}-01-extra",  # version 00 has exactly four fields
        f"00-{TRACE[:-1]}-{PARENT}-01",
        f"00-{TRACE}0-{PARENT}-01",
        f"00-{TRACE}-{PARENT}-1",
        f"00-{TRACE}-{PARENT}",
        f"00_{TRACE}_{PARENT}_01",
        f" 00-{TRACE}-{PARENT}-01",
        f"00-{TRACE}-{PARENT}-01\n",
        f"00-{'g' * 32}-{PARENT}-01",
        f"cc-{TRACE}-{PARENT}-01x",  # a later version's extra fields follow a dash
        f"cc-{TRACE}-{PARENT}-01-" + "x" * 1000,  # absurdly long
    ]
    for value in bad:
        assert valid_traceparent(value) is None, value


async def test_an_invalid_traceparent_never_reaches_the_target(raw: Raw) -> None:
    alice = raw.session("alice", "billing")
    rate = {"base": "EUR", "quote": "USD"}

    async def call(traceparent: str) -> None:
        g = (await raw.authorize(alice, "payments.get_exchange_rate", rate)).body
        r = await raw.execute(alice, g, "payments.get_exchange_rate", rate,
                              extra_headers={"traceparent": traceparent})  # fmt: skip
        assert r.error is None, r.body

    # Each value carries ids of its own, so none can hide behind another.
    ids = [(uuid.uuid4().hex, secrets.token_hex(8)) for _ in range(9)]
    invalid = [
        f"ff-{ids[0][0]}-{ids[0][1]}-01",
        f"00-{'0' * 32}-{ids[1][1]}-01",
        f"00-{ids[2][0]}-{'0' * 16}-01",
        f"00-{ids[3][0].upper()}-{ids[3][1].upper()}-01",
        f"00-{ids[4][0]}-{ids[4][1]}-01-extra",
        f"00-{ids[5][0][1:]}-{ids[5][1]}-01",
        f"00-{ids[6][0]}-{ids[6][1]}-1",
    ]
    for value in invalid:
        await call(value)
    await call(f"00-{ids[7][0]}-{ids[7][1]}-01")  # valid: passed on
    await call(f"cc-{ids[8][0]}-{ids[8][1]}-01-later")  # a later version: passed on as 00
    seen = [tp.lower() for tp in (await raw.target_stats())["traceparents"]]
    for value in invalid:
        for part in value.lower().split("-")[1:3]:
            if part.strip("0"):
                assert not any(part in tp for tp in seen), (value, seen)
    assert any(ids[7][0] in tp for tp in seen), seen
    assert any(tp.startswith(f"00-{ids[8][0]}-") for tp in seen), seen
