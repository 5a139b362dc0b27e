#!/usr/bin/env bash
# `make lock`: resolves every virtualenv this repository installs from pyproject.toml's
# ranges into requirements-*.txt, each version pinned and every file hashed (uv pip compile,
# universal: one file serves every platform and Python the project supports).
# scripts/bootstrap.sh and deploy/Dockerfile install exactly these files; review a refresh
# with `git diff requirements-*.txt` and test it with `make test-latest` before it lands.
# Extra arguments go to every `uv pip compile` (for example --upgrade-package NAME).
set -euo pipefail
cd "$(dirname "$0")/.."
uv=${UV:-.venv/bin/uv}
[ -x "$uv" ] || uv=$(command -v uv) || { echo "make lock needs uv (in the dev extra: run scripts/bootstrap.sh)" >&2; exit 1; }
compile() {
  out=$1; shift
  "$uv" pip compile --quiet --universal --python-version 3.11 --generate-hashes \
    --no-header --custom-compile-command "make lock" -o "requirements-$out" "$@" ${LOCK_ARGS:-}
}
# The development and CI virtualenv (.venv): tests, lint, bench, every framework but CrewAI.
compile dev.txt pyproject.toml requirements-build.in --extra dev --extra bench "$@"
# What builds the project and the lock's sdists, installed first (pins taken from dev.txt).
compile build.txt requirements-build.in -c requirements-dev.txt
# The container image: a worker and the console, at dev.txt's versions.
# The gateway's /mcp needs the MCP SDK (the mcp extra; not in server, which CrewAI shares).
compile image.txt pyproject.toml requirements-build.in --extra server --extra console --extra mcp \
  -c requirements-dev.txt
# CrewAI pins older pydantic and openai releases than the other frameworks: its own
# virtualenv (.venv-crewai), resolved apart.
compile crewai.txt pyproject.toml requirements-build.in --extra server --extra crewai --extra test "$@"
echo "requirements-*.txt refreshed: review with git diff requirements-*.txt, test with make test-latest" >&2
