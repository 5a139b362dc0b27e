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
# Two processes (HANDSHAKE_TEST_WORKERS), each taking whole modules: most of a test's
# time is stacks starting and servers answering, which overlap well on two cores.
.venv/bin/python -m pytest -q -n "${HANDSHAKE_TEST_WORKERS:-2}" --dist loadfile "$@"
if [ $# -eq 0 ]; then
  # The failure drill on a NATS cluster and a Redis Cluster (the whole of it, suites on
  # both Redis shapes included, is `make test-cluster`).
  echo "== failure drill (NATS cluster + Redis Cluster)"
  HANDSHAKE_TEST_ENGINES=cluster .venv/bin/python -m pytest -q -s tests/test_engine_drills.py
  # The CrewAI adapter's test and example, in their own virtualenv (see bootstrap.sh).
  echo "== pytest (CrewAI, in .venv-crewai)"
  bash scripts/bootstrap.sh crewai
  HANDSHAKE_REQUIRE_FRAMEWORKS=crewai .venv-crewai/bin/python -m pytest -q -p no:cacheprovider -k crewai \
    tests/test_adapters.py tests/test_examples.py
fi
