"""Every script in ``examples/`` runs, as a user would run it, against the real stack."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mcp_handshake.client import ProofKey
from mcp_handshake.services.dev.devhome import mint_session
from mcp_handshake.services.dev.devstack import Stack

from .conftest import ROOT, connected

EXAMPLES = sorted((ROOT / "examples").glob("*.py"))
NEEDS = {"crewai_agent.py": "crewai"}
#: Frameworks a run must not skip (the test command's CrewAI run sets it).
REQUIRED = set(filter(None, os.environ.get("HANDSHAKE_REQUIRE_FRAMEWORKS", "").split(",")))


def test_every_example_is_listed_in_the_readme() -> None:
    readme = (ROOT / "examples" / "README.md").read_text()
    assert EXAMPLES and all(path.name in readme for path in EXAMPLES)


@pytest.mark.parametrize("script", EXAMPLES, ids=lambda p: p.stem)
async def test_example_runs_one_mediated_operation(
    stack: Stack, script: Path, tmp_path: Path
) -> None:
    framework = NEEDS.get(script.name)
    if framework and importlib.util.find_spec(framework) is None:
        assert framework not in REQUIRED, f"{framework} must be installed in this run"
        pytest.skip(f"{framework} is not installed (extra [{framework}])")
    # The user's setup from the README: an agent key, and a session bound to it.
    key_file = tmp_path / "agent.pem"
    key = ProofKey.load_or_create(key_file)
    env = stack.env()
    env.update(
        HOME=str(tmp_path),  # frameworks that keep state (CrewAI) keep it here
        HANDSHAKE_AGENT_KEY=str(key_file),
        HANDSHAKE_SESSION=mint_session(stack.home, "alice", roles=["billing"], jkt=key.thumbprint),
    )
    async with connected(stack) as raw:
        before = (await raw.target_stats())["side_effects"]
        proc = subprocess.run(  # noqa: ASYNC221 (a user's process, run to completion)
            [sys.executable, str(script)],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=90,
        )
        after = (await raw.target_stats())["side_effects"]
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "'status': 'ok'" in proc.stdout or '"status": "ok"' in proc.stdout, proc.stdout
    assert after - before == 1
