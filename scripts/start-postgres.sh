#!/usr/bin/env bash
# Start a throwaway PostgreSQL server for the tests on loopback (idempotent) and print its URL.
# Installs Debian's postgresql when it is missing (needs root); data lives in $GMSENSE_PG_DATA.
set -euo pipefail
PGPORT=${GMSENSE_PG_PORT:-54329}
PGDATA=${GMSENSE_PG_DATA:-/tmp/gmsense-pg}
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >&2
fi
BIN=$(dirname "$(ls -d /usr/lib/postgresql/*/bin/initdb | sort -V | tail -n 1)")
if [ "$(id -u)" = 0 ]; then RUN=(runuser -u postgres --); else RUN=(); fi
if [ ! -f "$PGDATA/PG_VERSION" ]; then
  mkdir -p "$PGDATA"
  [ "$(id -u)" = 0 ] && chown postgres "$PGDATA"
  "${RUN[@]}" "$BIN/initdb" -D "$PGDATA" -A trust -U gmsense >/dev/null
fi
if ! "${RUN[@]}" "$BIN/pg_ctl" -D "$PGDATA" status >/dev/null 2>&1; then
  "${RUN[@]}" "$BIN/pg_ctl" -D "$PGDATA" -w -l "$PGDATA/server.log" \
    -o "-p $PGPORT -k /tmp -c listen_addresses=127.0.0.1" start >/dev/null
fi
"$BIN/psql" -h 127.0.0.1 -p "$PGPORT" -U gmsense -d postgres -tAc \
  "SELECT 1 FROM pg_database WHERE datname = 'gmsense_test'" | grep -q 1 \
  || "$BIN/createdb" -h 127.0.0.1 -p "$PGPORT" -U gmsense gmsense_test
echo "postgresql+psycopg://gmsense@127.0.0.1:$PGPORT/gmsense_test"
