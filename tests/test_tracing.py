"""One client call yields one trace spanning every hop, named per the messaging conventions."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

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
