#!/usr/bin/env bash
# The test command: set the host up (idempotent, cached), then lint, type-check and run every test,
# unit tests and real-VM tests. Run as root on Debian 12. Exits non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "error: run as root (sudo $0)" >&2; exit 1; }
./scripts/bootstrap.sh
npm run --silent lint
npm run --silent typecheck
npm run --silent format:check
npx vitest run "$@"
