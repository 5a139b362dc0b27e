#!/usr/bin/env bash
# The engines of a real deployment, on this machine's loopback: a three-node NATS
# cluster (streams and buckets with three replicas) with a Redis Cluster (three
# masters, three replicas), then with a Redis master and replica under three Sentinels.
# On each: the core, tier and audit suites, then the failure drills (SIGKILL the NATS
# node leading the audit stream, then the Redis master, with traffic running), whose
# figures are printed. ENGINES="cluster" runs one of the two.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
suites=(tests/test_attacks.py tests/test_protocol_errors.py tests/test_tier_internal.py
        tests/test_tier_confidential.py tests/test_tier_restricted.py tests/test_audit.py)
for engines in ${ENGINES:-cluster sentinel}; do
  echo "== suites on NATS cluster + Redis $engines"
  HANDSHAKE_TEST_ENGINES=$engines .venv/bin/python -m pytest -q "${suites[@]}" "$@"
  echo "== failure drills on NATS cluster + Redis $engines"
  HANDSHAKE_TEST_ENGINES=$engines .venv/bin/python -m pytest -q -s tests/test_engine_drills.py
done
