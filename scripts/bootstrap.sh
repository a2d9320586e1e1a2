#!/usr/bin/env bash
# Installs Hearth's npm dependencies (once per package-lock change) and compiles the TypeScript.
# Node.js 20+ and npm must be on the machine (they are on a fresh Debian 12 machine of this kind).
set -euo pipefail
cd "$(dirname "$0")/.."
command -v node >/dev/null || { echo "error: Node.js 20+ is required (not found on PATH)" >&2; exit 1; }
major=$(node -p 'process.versions.node.split(".")[0]')
[ "$major" -ge 20 ] || { echo "error: Node.js 20+ is required, found $(node -v)" >&2; exit 1; }
stamp=node_modules/.hearth-lock-sha
want=$(sha256sum package-lock.json | cut -c1-64)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  # npm ci rejects this registry's lock files (it records only this platform's optional packages); install honours the lock.
  npm install --no-audit --no-fund --loglevel=error
  echo "$want" > "$stamp"
fi
npx tsc -p tsconfig.json
chmod +x dist/cli/main.js
