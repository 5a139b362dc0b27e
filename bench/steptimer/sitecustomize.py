"""Wall time of each step of a handshake, inside a worker: loaded by
``bench/step_latency.py`` (this folder on the workers' ``PYTHONPATH``) and inert
unless ``HANDSHAKE_BENCH_STEPS`` names a folder to write into.

Each listed function is wrapped, once its module has been imported, to add its
call count and elapsed wall time to a table; the table is written to
``$HANDSHAKE_BENCH_STEPS/<pid>.json`` twice a second. Bench use only.
"""

from __future__ import annotations

import builtins
import functools
import inspect
import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

#: (module, attribute path) of every step timed, in the order a handshake meets them.
STEPS = [
    ("mcp_handshake.services.runtime.endpoint", "Endpoint._serve"),
    ("mcp_handshake.services.authorize.handler", "handle_authorize"),
    ("mcp_handshake.services.core.bind", "bind"),
    ("mcp_handshake.services.store.tokens", "TokenStore.issue"),
    ("mcp_handshake.services.execute.handler", "handle_execute"),
    ("mcp_handshake.services.store.tokens", "TokenStore.consume"),
    ("mcp_handshake.services.runtime.audit", "Audit.intent"),
    ("mcp_handshake.services.execute.handler", "_consume_gated"),
    ("mcp_handshake.services.execute.gate", "Gate.passed"),
    ("mcp_handshake.services.execute.handler", "_presigned"),
    ("mcp_handshake.services.core.signing", "DispatchSigner.sign"),
    ("mcp_handshake.services.execute.handler", "send_dispatch"),
    ("mcp_handshake.services.execute.handler", "_send"),
    ("mcp_handshake.services.executor.handler", "handle_dispatch"),
    ("mcp_handshake.services.core.signing", "DispatchVerifier.verify"),
    ("mcp_handshake.services.store.dispatches", "DispatchLog.claim"),
    ("mcp_handshake.services.core.signing", "ReceiptSigner.sign"),
]

_table: dict[str, list[int]] = {}


def _timed(name: str, fn: Any) -> Any:
    def add(started: int) -> None:
        row = _table.setdefault(name, [0, 0])
        row[0] += 1
        row[1] += time.perf_counter_ns() - started

    if inspect.iscoroutinefunction(fn):

        @functools.wraps(fn)
        async def run_async(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter_ns()
            try:
                return await fn(*args, **kwargs)
            finally:
                add(started)

        return run_async

    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter_ns()
        try:
            return fn(*args, **kwargs)
        finally:
            add(started)

    return run


def _install() -> None:
    pending = set(STEPS)
    original = builtins.__import__

    def patch() -> None:
        for module, path in list(pending):
            if module not in sys.modules:
                continue
            owner: Any = sys.modules[module]
            *parents, attr = path.split(".")
            try:
                for part in parents:
                    owner = getattr(owner, part)
                fn = getattr(owner, attr)
            except AttributeError:  # the module is still being imported
                continue
            setattr(owner, attr, _timed(path, fn))
            pending.discard((module, path))
        if not pending:
            builtins.__import__ = original

    def importing(*args: Any, **kwargs: Any) -> Any:
        module = original(*args, **kwargs)
        patch()
        return module

    builtins.__import__ = importing


def _writer(folder: Path) -> None:
    out = folder / f"{os.getpid()}.json"
    while True:
        time.sleep(0.5)
        tmp = out.with_suffix(".tmp")
        tmp.write_text(json.dumps({"argv": sys.argv[1:], "steps": _table}))
        tmp.replace(out)


if os.environ.get("HANDSHAKE_BENCH_STEPS") and "worker" in sys.argv:
    _install()
    threading.Thread(
        target=_writer, args=(Path(os.environ["HANDSHAKE_BENCH_STEPS"]),), daemon=True
    ).start()
