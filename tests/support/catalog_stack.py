"""A whole stack for catalog tests: the demo's Cedar policy plus a test's own permits,
and ``handshake.toml`` rewritten to name the test's catalogs (and targets)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from importlib import resources
from pathlib import Path

from mcp_handshake.services.dev.devstack import Stack, StackSpec

ROOT = Path(__file__).resolve().parent.parent.parent


@contextmanager
def catalog_stack(home: Path, policy: str, edit: Callable[[str], str]) -> Iterator[Stack]:
    """Start it in ``home`` (a new folder); stopped on the way out, started or not."""
    home.mkdir()
    demo = resources.files("mcp_handshake.services.dev.demo").joinpath("policy.cedar")
    (home / "policy.cedar").write_text(demo.read_text() + policy)
    st = Stack(home, StackSpec(), extra_env={"PYTHONPATH": str(ROOT)}, config_edit=edit)
    try:
        asyncio.run(st.start(timeout=120))
        yield st
    finally:
        st.stop()
