#!/usr/bin/env bash
# Test dependencies of the PostgreSQL journal and the workers: Debian's
# postgresql (initdb, pg_ctl, postgres, psql, pg_dump) and an unprivileged
# system user, orchestrate-pg, that the tests start their private servers
# as (PostgreSQL refuses to run as root). The tests start and stop those
# servers themselves (tests/it/support/postgres.rs), on a loopback port in
# a temporary folder; nothing here starts a server. Idempotent; as a
# non-root user it only checks and prints.
set -euo pipefail

USER_NAME=orchestrate-pg

have_initdb() {
  command -v initdb >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1
}

if [ "$(id -u)" -ne 0 ]; then
  if have_initdb; then
    echo "postgres deps: postgresql present (not root: nothing installed)"
  else
    echo "postgres deps: postgresql missing; run this script as root" >&2
  fi
  exit 0
fi

if ! have_initdb || ! command -v psql >/dev/null 2>&1; then
  echo "postgres deps: installing postgresql"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq -o DPkg::Lock::Timeout=600 --no-install-recommends postgresql postgresql-client >/dev/null
fi

if ! id "$USER_NAME" >/dev/null 2>&1; then
  echo "postgres deps: creating user $USER_NAME"
  useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin "$USER_NAME"
fi
echo "postgres deps: ok ($(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | tail -1), user $USER_NAME)"
