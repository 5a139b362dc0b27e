"""The Lua scripts of the token store, loaded from ``lua/*.lua`` by one loader.

Every script touches the keys of one Cluster hash slot (``Keys`` puts the part
that decides the slot in braces), so each runs on one node in Redis Cluster as
on a single Redis. Scripts run by EVALSHA. A node forgets scripts when it
restarts, is flushed or was promoted from a replica; that node then gets the
script's source once (EVAL, which also caches it there), and only the script
that failed runs again, so a batch's other commands (a ``SET NX`` among them)
never run twice.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from contextlib import nullcontext
from importlib import resources
from typing import Any

from redis.asyncio.cluster import RedisCluster
from redis.exceptions import NoScriptError

from .redis import BoundedCluster, Client
from .resp import Resp

__all__ = ["Arg", "Batch", "Scripts"]

Arg = str | bytes | int | float


def _sources() -> dict[str, str]:
    folder = resources.files(__package__).joinpath("lua")
    return {p.name[:-4]: p.read_text() for p in folder.iterdir() if p.name.endswith(".lua")}


class Scripts:
    """Every script by name (its file's stem)."""

    def __init__(self, redis: Client, fast: Resp | None = None) -> None:
        self._redis = redis
        self._sha = {name: redis.register_script(src).sha for name, src in _SOURCES.items()}
        #: Redis Cluster: scripts never go into a pipeline (redis-py refuses EVALSHA
        #: in a cluster pipeline); each is its own round trip to its slot's node.
        self.cluster = isinstance(redis, RedisCluster)
        #: A single Redis: scripts and batches over the lean connection (``.resp``).
        self.fast = None if self.cluster else fast

    @property
    def redis(self) -> Client:
        return self._redis

    def sha(self, name: str) -> str:
        return self._sha[name]

    async def call(self, name: str, keys: Sequence[str], args: Sequence[Arg]) -> Any:
        """Run one script (one round trip; two on a node that forgot the scripts)."""
        fast = self.fast
        try:
            if fast is not None:
                return await fast.execute("EVALSHA", self._sha[name], len(keys), *keys, *args)
            return await self._redis.evalsha(self._sha[name], len(keys), *keys, *args)
        except NoScriptError:
            # EVAL goes to the same node as EVALSHA (the keys' slot) and caches it there.
            if fast is not None:
                return await fast.execute("EVAL", _SOURCES[name], len(keys), *keys, *args)
            return await self._redis.eval(_SOURCES[name], len(keys), *keys, *args)

    def batch(self) -> Batch:
        return Batch(self)


class Batch:
    """Scripts and plain commands sent together. On a single Redis (or through
    Sentinel): one pipeline (no transaction), one round trip. On Redis Cluster: the
    plain commands in one cluster pipeline (split by node) and each script on its own,
    all at once; results in the order the calls were made either way."""

    def __init__(self, scripts: Scripts) -> None:
        self._scripts = scripts
        self.pipe: Any = scripts.redis.pipeline(transaction=False)
        self._calls: dict[int, tuple[str, Sequence[str], Sequence[Arg]]] = {}

    def script(self, name: str, keys: Sequence[str], args: Sequence[Arg]) -> None:
        self._calls[len(self.pipe) + (len(self._calls) if self._scripts.cluster else 0)] = (
            name,
            keys,
            args,
        )
        if not self._scripts.cluster:
            self.pipe.evalsha(self._scripts.sha(name), len(keys), *keys, *args)

    async def execute(self) -> list[Any]:
        """Results in order; raises the first error (a ``StoreError``) among them."""
        if self._scripts.cluster:
            results = await self._clustered()
        elif self._scripts.fast is not None:
            results = await self._lean(self._scripts.fast)
        else:
            async with self.pipe as pipe:
                results = await pipe.execute(raise_on_error=False)
        if not self._scripts.cluster:
            for i, (name, keys, args) in self._calls.items():
                if isinstance(results[i], NoScriptError):
                    results[i] = await self._scripts.call(name, keys, args)
        for result in results:
            if isinstance(result, Exception):
                raise result
        return results

    async def _lean(self, fast: Resp) -> list[Any]:
        """The pipeline's commands, as redis-py queued them, over the lean connection;
        each reply read as redis-py reads it (its response callbacks)."""
        stack = self.pipe.command_stack
        replies = await fast.execute_many([args for args, _ in stack])
        callbacks = self.pipe.response_callbacks
        out = []
        for (args, options), reply in zip(stack, replies, strict=True):
            parse = callbacks.get(args[0])
            if parse is None or isinstance(reply, Exception):
                out.append(reply)
            else:
                out.append(parse(reply, **{k: v for k, v in options.items() if k != "keys"}))
        self.pipe.command_stack = []
        return out

    async def _clustered(self) -> list[Any]:
        async def plain() -> list[Any]:
            if not len(self.pipe):
                return []
            # Not ``async with``: a cluster pipeline's __aenter__ drops what was queued.
            redis = self._scripts.redis
            bound = redis.bounded() if isinstance(redis, BoundedCluster) else nullcontext()
            async with bound:
                out: list[Any] = await self.pipe.execute(raise_on_error=False)
            return out

        calls = [self._scripts.call(*c) for c in self._calls.values()]
        done = await asyncio.gather(plain(), *calls, return_exceptions=True)
        if isinstance(done[0], BaseException):
            raise done[0]
        rest = iter(done[0])
        scripted = dict(zip(self._calls, done[1:], strict=True))
        total = len(done[0]) + len(scripted)
        return [scripted[i] if i in scripted else next(rest) for i in range(total)]


_SOURCES = _sources()
