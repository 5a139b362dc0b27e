"""One Redis round trip for the first store step of every operation of a batch.

A batch runs each operation through the single-operation code, concurrently.
:class:`Coalescer` gives each operation a :class:`Scripts` of its own
(:meth:`Coalescer.member`) whose first call (a script, or a batch of scripts and
commands) is held until every operation has either made its first call or
finished without one; then all of them go to Redis in one pipeline
(:class:`~.scripts.Batch`: one round trip on a single Redis, one per node on
Cluster). Each script stays atomic on its own keys, so a token is still used up
exactly once. An operation's later calls go straight to Redis. A Redis failure
fails every operation of that round (each raises it, as it would alone).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from mcp_handshake.shared.rounds import Round

from . import Store
from .limits import Counters
from .scripts import Arg, Batch, Scripts
from .tokens import TokenStore

__all__ = ["Coalescer", "Member", "member_store"]

#: ``("script", name, keys, args)`` or ``("pipe", command, args, kwargs)``.
Step = tuple[str, Any, Any, Any]


class Coalescer:
    """The round of first calls of ``size`` operations over ``scripts``."""

    def __init__(self, scripts: Scripts, size: int) -> None:
        self.scripts = scripts
        self.round: Round[list[Step], list[Any]] = Round(size, self._flush)

    def member(self) -> Member:
        """The scripts one operation uses; call :meth:`Member.leave` when it ends."""
        return Member(self)

    async def _flush(self, queued: list[list[Step]]) -> list[list[Any]]:
        batch = self.scripts.batch()
        for steps in queued:
            _apply(batch, steps)
        results = await batch.execute()
        out, at = [], 0
        for steps in queued:
            out.append(results[at : at + len(steps)])
            at += len(steps)
        return out


class Member(Scripts):
    """One operation's :class:`Scripts`: its first call joins the batch's round."""

    def __init__(self, owner: Coalescer) -> None:  # no super(): the scripts are owner's
        self._owner = owner
        self._inner = owner.scripts
        self.cluster = owner.scripts.cluster
        self._state = "fresh"

    @property
    def redis(self) -> Any:
        return self._inner.redis

    def sha(self, name: str) -> str:
        return self._inner.sha(name)

    def leave(self) -> None:
        """The operation ended; if it never called, the round no longer waits for it."""
        if self._state == "fresh":
            self._state = "left"
            self._owner.round.leave()

    def take_turn(self) -> bool:
        """Whether this call joins the round (the first call only)."""
        if self._state != "fresh":
            return False
        self._state = "submitted"
        return True

    async def call(self, name: str, keys: Sequence[str], args: Sequence[Arg]) -> Any:
        if not self.take_turn():
            return await self._inner.call(name, keys, args)
        return (await self._owner.round.submit([("script", name, keys, args)]))[0]

    def batch(self) -> Batch:
        return _HeldBatch(self)


class _Recorder:
    """Stands for a pipeline: records the commands called on it."""

    def __init__(self) -> None:
        self.steps: list[Step] = []

    def __len__(self) -> int:
        return len(self.steps)

    def __getattr__(self, command: str) -> Any:
        def record(*args: Any, **kwargs: Any) -> None:
            self.steps.append(("pipe", command, args, kwargs))

        return record


class _HeldBatch(Batch):
    def __init__(self, member: Member) -> None:  # no super(): nothing is sent from here
        self._member = member
        self._recorder = _Recorder()
        self.pipe = self._recorder

    def script(self, name: str, keys: Sequence[str], args: Sequence[Arg]) -> None:
        self._recorder.steps.append(("script", name, keys, args))

    async def execute(self) -> list[Any]:
        steps = self._recorder.steps
        member = self._member
        if member.take_turn():
            return await member._owner.round.submit(steps)
        direct = member._inner.batch()
        _apply(direct, steps)
        return await direct.execute()


def _apply(batch: Batch, steps: list[Step]) -> None:
    for kind, name, args, kwargs in steps:
        if kind == "script":
            batch.script(name, args, kwargs)
        else:
            getattr(batch.pipe, name)(*args, **kwargs)


def member_store(store: Store, member: Member) -> Store:
    """``store`` with the token store and counters of one operation of a batch."""
    tokens = TokenStore(member)
    return dataclasses.replace(store, tokens=tokens, counters=Counters(member))
