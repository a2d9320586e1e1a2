#!/usr/bin/env bash
# The main job: set the host up (idempotent, cached), then boot a microVM from the Debian base disk,
# show it answering HTTP, snapshot it and serve from a clone. Run as root on Debian 12.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "error: run as root (sudo $0)" >&2; exit 1; }
./scripts/bootstrap.sh
node dist/cli/main.js setup
exec node dist/cli/main.js demo "$@"
