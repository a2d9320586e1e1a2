#!/usr/bin/env bash
# A throwaway PostgreSQL server for the store's tests (src/store). Installs Debian's postgresql
# package if no server binaries are present (idempotent), creates a cluster in a new temporary
# directory owned by the postgres user, starts it on 127.0.0.1 and a Unix socket in that directory,
# creates a database and prints its URL on stdout (everything else goes to stderr):
#
#   url=$(sudo ./scripts/postgres-test-server.sh)
#   HEARTH_TEST_POSTGRES_URL=$url npx vitest run --project unit src/store
#   sudo ./scripts/postgres-test-server.sh stop <dir printed on stderr>
#
# The cluster trusts local connections and runs with fsync off: for tests only, never for data.
# Run as root (the server runs as the postgres user) or as an ordinary user with the package
# installed (the server then runs as that user).
#
# Usage: postgres-test-server.sh [start] [--port N] [--db NAME]
#        postgres-test-server.sh stop DIR
set -euo pipefail

log() { echo "postgres-test-server: $*" >&2; }
die() { log "error: $*"; exit 1; }

pg_bindir() {
  # The newest installed server version (Debian 12 ships 15).
  local d
  d=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
  [ -n "$d" ] && [ -x "$d/initdb" ] && echo "$d"
}

as_owner() {
  # Runs a server command as the cluster's owner: postgres when we are root, else ourselves.
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

cmd=start
if [ "${1:-}" = start ] || [ "${1:-}" = stop ]; then cmd=$1; shift; fi

if [ "$cmd" = stop ]; then
  dir=${1:?usage: $0 stop DIR}
  [ -f "$dir/data/PG_VERSION" ] || die "$dir is not a directory made by this script"
  bindir=$(pg_bindir) || die "no PostgreSQL server binaries found"
  as_owner "$bindir/pg_ctl" -D "$dir/data" -m fast -w stop >&2 || true
  rm -rf -- "$dir"
  log "stopped and removed $dir"
  exit 0
fi

port=''
dbname=hearth_test
while [ $# -gt 0 ]; do
  case "$1" in
    --port) port=$2; shift 2 ;;
    --db) dbname=$2; shift 2 ;;
    *) die "unknown argument $1" ;;
  esac
done
[[ "$dbname" =~ ^[a-z_][a-z0-9_]*$ ]] || die "database name must match [a-z_][a-z0-9_]*"

if ! bindir=$(pg_bindir); then
  [ "$(id -u)" = 0 ] || die "PostgreSQL is not installed; run as root to install it"
  log "installing Debian's postgresql package"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq --no-install-recommends postgresql >&2
  bindir=$(pg_bindir) || die "postgresql installed but no initdb found under /usr/lib/postgresql"
fi

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
if [ -z "$port" ]; then
  for p in $(seq 55432 55532); do
    if port_free "$p"; then port=$p; break; fi
  done
  [ -n "$port" ] || die "no free port in 55432-55532"
fi

dir=$(mktemp -d /tmp/hearth-pg.XXXXXX)
chmod 0755 "$dir"
if [ "$(id -u)" = 0 ]; then
  id postgres >/dev/null 2>&1 || die "no postgres user (is the postgresql package installed?)"
  chown postgres: "$dir"
  user=postgres
else
  user=$(id -un)
fi

as_owner "$bindir/initdb" -D "$dir/data" -U "$user" --auth=trust --encoding=UTF8 --locale=C.UTF-8 >"$dir/initdb.log" 2>&1 ||
  { cat "$dir/initdb.log" >&2; die "initdb failed"; }
as_owner "$bindir/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 30 \
  -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off" \
  start >&2 || { cat "$dir/server.log" >&2; die "server did not start"; }
as_owner "$bindir/createdb" -h "$dir" -p "$port" -U "$user" "$dbname"

log "server running from $dir (socket $dir/.s.PGSQL.$port, log $dir/server.log)"
log "stop it with: $0 stop $dir"
echo "postgres://$user@127.0.0.1:$port/$dbname"
