#!/usr/bin/env bash
# The test command: installs what is missing, then lint, type check and the test suite
# (which starts its own nats-server and redis-server on free ports).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
echo "== ruff"
.venv/bin/ruff check shared client services tests bench
echo "== mypy"
.venv/bin/mypy
echo "== pytest"
exec .venv/bin/python -m pytest -q "$@"
