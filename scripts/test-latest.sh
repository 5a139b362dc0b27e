#!/usr/bin/env bash
# `make test-latest`: the lint, type check and test suite against the newest releases that
# pyproject.toml's ranges admit, in a throwaway virtualenv (pip resolves them today), so a
# refreshed lock is tested before it lands. Not part of CI: CI runs the lock.
# Arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh   # redis-server and chromium where missing (and .venv)
venv=$(mktemp -d)/venv
trap 'rm -rf "$(dirname "$venv")"' EXIT
python3 -m venv "$venv"
echo "installing the newest releases into $venv ..." >&2
"$venv/bin/python" -m pip install -q --upgrade pip </dev/null
"$venv/bin/python" -m pip install -q -e '.[dev,bench]' </dev/null 2>&1 | grep -v "is ignored" || true
"$venv/bin/python" -m pip freeze --exclude-editable >"$(dirname "$venv")/freeze.txt"
echo "== versions that differ from requirements-dev.txt" >&2
"$venv/bin/python" - "$(dirname "$venv")/freeze.txt" <<'PY' >&2
import re, sys
lock = dict(re.findall(r"^([A-Za-z0-9._-]+)==([^ ;\\]+)", open("requirements-dev.txt").read(), re.M))
norm = lambda n: re.sub(r"[-_.]+", "-", n).lower()
lock = {norm(k): v for k, v in lock.items()}
for line in open(sys.argv[1]):
    name, _, ver = line.strip().partition("==")
    if ver and lock.get(norm(name)) != ver:
        print(f"  {name}: {lock.get(norm(name), '(not locked)')} -> {ver}")
PY
echo "== ruff"
"$venv/bin/ruff" check shared client services tests bench
echo "== mypy"
"$venv/bin/mypy"
echo "== pytest (newest releases)"
HANDSHAKE_TEST_LATEST=1 "$venv/bin/python" -m pytest -q "$@"
