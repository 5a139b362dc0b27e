"""The repository runs exactly its lock: the virtualenv holds the locked versions and no
others, the lock satisfies every range pyproject.toml declares, and a package whose hash
differs from the lock's is refused."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
_PIN = re.compile(r"^([A-Za-z0-9._-]+)==([^ ;\\]+)(?:\s*;\s*([^\\]+?))?\s*\\?$")


def _pins(lock: str) -> dict[str, str]:
    """``name -> version`` for this interpreter, markers evaluated as pip does."""
    pins = {}
    for line in (ROOT / f"requirements-{lock}").read_text().splitlines():
        m = _PIN.match(line)
        if m and (m.group(3) is None or Marker(m.group(3)).evaluate()):
            pins[canonicalize_name(m.group(1))] = m.group(2)
    return pins


_LATEST = bool(os.environ.get("HANDSHAKE_TEST_LATEST"))


@pytest.mark.skipif(_LATEST, reason="make test-latest runs the newest releases, not the lock")
def test_the_virtualenv_holds_exactly_the_lock() -> None:
    installed = {canonicalize_name(d.metadata["Name"]): d.version for d in metadata.distributions()}
    installed.pop("mcp-handshake")
    installed.pop("pip")  # the virtualenv's own installer, not a dependency
    assert installed == _pins("dev.txt")


def _extras() -> dict[str, list[str]]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return {"": project["dependencies"], **project["optional-dependencies"]}


@pytest.mark.parametrize(("lock", "extras"), [
    ("dev.txt", ["", "cli", "server", "console", "dev", "test", "mcp", "bench", "langchain",
                 "openai-agents", "pydantic-ai", "llamaindex"]),
    ("image.txt", ["", "cli", "server", "console", "mcp"]),
    ("crewai.txt", ["", "cli", "server", "crewai", "test"]),
])  # fmt: skip
def test_each_lock_satisfies_the_ranges_pyproject_declares(lock: str, extras: list[str]) -> None:
    """A range changed without ``make lock`` shows up here, not on a user's machine."""
    pins = _pins(lock)
    declared = _extras()
    for extra in extras:
        for spec in declared[extra]:
            req = Requirement(spec)
            if canonicalize_name(req.name) == "mcp-handshake" or (
                req.marker is not None and not req.marker.evaluate({"extra": extra})
            ):
                continue
            name = canonicalize_name(req.name)
            assert name in pins, f"{lock}: {req.name} ({extra or 'base'}) is not locked"
            assert req.specifier.contains(pins[name], prereleases=True), (
                f"{lock}: {req.name}=={pins[name]} is outside {spec!r}: run make lock"
            )


def test_build_tools_are_pinned_as_in_the_dev_lock() -> None:
    dev = _pins("dev.txt")
    for name, version in _pins("build.txt").items():
        assert dev.get(name) == version, name


def test_a_package_whose_hash_differs_from_the_lock_is_refused(tmp_path: Path) -> None:
    lines = (ROOT / "requirements-build.txt").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("wheel=="))
    entry = [lines[start]]
    for line in lines[start + 1 :]:
        if not line.strip().startswith("--hash="):
            break
        entry.append(line)
    # Every real hash of the release replaced by another: the file pip fetches is the same.
    forged = [re.sub(r"sha256:[0-9a-f]{64}", "sha256:" + "0" * 64, line) for line in entry]
    (tmp_path / "forged.txt").write_text("\n".join(forged).rstrip(" \\") + "\n")
    out = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--require-hashes",
         "--only-binary", ":all:", "--target", str(tmp_path / "site"),
         "-r", str(tmp_path / "forged.txt")],
        capture_output=True, text=True, timeout=180, check=False, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert out.returncode != 0
    assert "DO NOT MATCH THE HASHES" in out.stderr
    assert not (tmp_path / "site" / "wheel").exists()


def test_the_image_installs_the_lock_hash_checked() -> None:
    dockerfile = (ROOT / "deploy" / "Dockerfile").read_text()
    assert "--require-hashes" in dockerfile
    assert "requirements-image.txt" in dockerfile
    assert "--no-deps" in dockerfile
