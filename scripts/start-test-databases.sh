#!/usr/bin/env bash
# Starts the local PostgreSQL and MariaDB used by the catalog tests, if
# they are installed and not answering.
set -uo pipefail
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
if ! port_open 5432 && [ -d /etc/postgresql ]; then
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start || true
fi
if ! port_open 3306 && [ -x /usr/sbin/mariadbd ]; then
  start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd || true
fi
for _ in $(seq 1 30); do
  port_open 5432 && port_open 3306 && exit 0
  sleep 1
done
echo "warning: PostgreSQL or MariaDB is not answering; catalog tests against them will fail" >&2
