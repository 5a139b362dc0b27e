#!/usr/bin/env bash
# The main job: installs what is missing, then runs the scripted demo on the embedded stack.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
exec .venv/bin/mcp-handshake demo "$@"
