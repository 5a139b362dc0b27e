"""The Lua scripts of the token store, loaded from ``lua/*.lua`` by one loader.

Scripts run by EVALSHA. Redis forgets scripts when it restarts or is flushed;
the loader then loads them again and re-runs only the script that failed, so a
pipeline's other commands (a ``SET NX`` among them) never run twice.
"""

from __future__ import annotations

from collections.abc import Sequence
from importlib import resources
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.exceptions import NoScriptError

__all__ = ["Arg", "Batch", "Scripts"]

Arg = str | bytes | int | float


def _sources() -> dict[str, str]:
    folder = resources.files(__package__).joinpath("lua")
    return {p.name[:-4]: p.read_text() for p in folder.iterdir() if p.name.endswith(".lua")}


class Scripts:
    """Every script by name (its file's stem)."""

    def __init__(self, redis: Redis) -> None:
        self._redis = redis
        self._sha = {name: redis.register_script(src).sha for name, src in _SOURCES.items()}

    @property
    def redis(self) -> Redis:
        return self._redis

    def sha(self, name: str) -> str:
        return self._sha[name]

    async def call(self, name: str, keys: Sequence[str], args: Sequence[Arg]) -> Any:
        """Run one script (one round trip; two after Redis forgot the scripts)."""
        try:
            return await self._redis.evalsha(self._sha[name], len(keys), *keys, *args)
        except NoScriptError:
            await self._redis.script_load(_SOURCES[name])
            return await self._redis.evalsha(self._sha[name], len(keys), *keys, *args)

    def batch(self) -> Batch:
        return Batch(self, self._redis.pipeline(transaction=False))


class Batch:
    """A pipeline (no transaction) of scripts and plain commands: one round trip."""

    def __init__(self, scripts: Scripts, pipe: Pipeline) -> None:
        self._scripts = scripts
        self.pipe = pipe
        self._calls: dict[int, tuple[str, Sequence[str], Sequence[Arg]]] = {}

    def script(self, name: str, keys: Sequence[str], args: Sequence[Arg]) -> None:
        self._calls[len(self.pipe)] = (name, keys, args)
        self.pipe.evalsha(self._scripts.sha(name), len(keys), *keys, *args)

    async def execute(self) -> list[Any]:
        """Results in order; raises the first error (``RedisError``) among them."""
        async with self.pipe as pipe:
            results: list[Any] = await pipe.execute(raise_on_error=False)
        for i, (name, keys, args) in self._calls.items():
            if isinstance(results[i], NoScriptError):
                results[i] = await self._scripts.call(name, keys, args)
        for result in results:
            if isinstance(result, Exception):
                raise result
        return results


_SOURCES = _sources()
