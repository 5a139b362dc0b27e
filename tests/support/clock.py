"""The clock of PyJWT and of the proof and session verifiers, stopped at a vector file's "now"."""

from __future__ import annotations

import datetime as dt
import types

import jwt
import pytest

from mcp_handshake.services.core import proofs, sessions


def freeze(monkeypatch: pytest.MonkeyPatch, now: float) -> float:
    """Stop PyJWT's ``datetime.now`` and the verifiers' ``time.time`` at ``now``."""

    class Frozen(dt.datetime):
        @classmethod
        def now(cls, tz: dt.tzinfo | None = None) -> Frozen:
            return cls.fromtimestamp(now, tz)

    monkeypatch.setattr(jwt.api_jwt, "datetime", Frozen)
    clock = types.SimpleNamespace(time=lambda: now)
    monkeypatch.setattr(proofs, "time", clock)  # batch proofs are checked there too
    monkeypatch.setattr(sessions, "time", clock)
    return now
