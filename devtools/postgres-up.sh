#!/usr/bin/env bash
# Make sure a PostgreSQL server listens on 127.0.0.1:5432 for the archive's tests, the demo and
# the bench: start Debian's cluster when it is installed but not running, install it when it
# is missing, and add the role `limetask` (password `limetask`, may create databases) with a
# database of the same name. Test credentials: besides loopback, only the local cluster's pods
# (its bridges, 10.244.0.0/16, where the in-cluster operator reaches it) may log in, as that role.
set -euo pipefail
PORT=5432
port_open() { (exec 3<>/dev/tcp/127.0.0.1/$PORT) 2>/dev/null; }
if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
as_postgres() { $SUDO runuser -u postgres -- "$@"; }
role() {
  if ! as_postgres psql -qtAX -p "$PORT" -c "SELECT 1 FROM pg_roles WHERE rolname = 'limetask'" | grep -q 1; then
    as_postgres psql -qX -p "$PORT" -c "CREATE ROLE limetask LOGIN CREATEDB PASSWORD 'limetask'" >/dev/null
    echo "[postgres] added the role limetask"
  fi
  if ! as_postgres psql -qtAX -p "$PORT" -c "SELECT 1 FROM pg_database WHERE datname = 'limetask'" | grep -q 1; then
    as_postgres createdb -p "$PORT" -O limetask limetask
    echo "[postgres] added the database limetask"
  fi
}
# The local cluster's pods reach this machine at their bridge's address: listen there too, and
# let the role limetask in from the bridges' range (password only). Needs a restart once.
pods() {
  local hba changed=""
  hba=$(as_postgres psql -qtAX -p "$PORT" -c "SHOW hba_file")
  if ! $SUDO grep -q "limetask-pods" "$hba"; then
    echo "host all limetask 10.244.0.0/16 scram-sha-256 # limetask-pods: the local cluster's pods" | $SUDO tee -a "$hba" >/dev/null
    changed=1
  fi
  if [ "$(as_postgres psql -qtAX -p "$PORT" -c "SHOW listen_addresses")" != "*" ]; then
    as_postgres psql -qX -p "$PORT" -c "ALTER SYSTEM SET listen_addresses = '*'" >/dev/null
    changed=1
  fi
  if [ -n "$changed" ]; then
    local cluster
    cluster=$(as_postgres psql -qtAX -p "$PORT" -c "SHOW data_directory" | awk -F/ '{print $(NF-1)" "$NF}')
    echo "[postgres] letting the local cluster's pods in (10.244.0.0/16); restarting $cluster"
    $SUDO pg_ctlcluster --skip-systemctl-redirect $cluster restart
    for _ in $(seq 1 30); do port_open && break; sleep 1; done
  fi
}
if port_open; then
  echo "[postgres] PostgreSQL is listening on 127.0.0.1:$PORT"
  role
  pods
  exit 0
fi
if ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; then
  echo "[postgres] installing postgresql"
  $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq postgresql >/dev/null
fi
VERSION=$(ls /usr/lib/postgresql | sort -V | tail -1)
if ! pg_lsclusters -h | awk '{print $1" "$2}' | grep -qx "$VERSION main"; then
  echo "[postgres] creating the cluster $VERSION/main"
  $SUDO pg_createcluster "$VERSION" main -p "$PORT" >/dev/null
fi
echo "[postgres] starting PostgreSQL $VERSION"
# No systemd where this runs (a container, CI): start the cluster directly.
$SUDO pg_ctlcluster --skip-systemctl-redirect "$VERSION" main start || true
for i in $(seq 1 60); do
  if port_open; then echo "[postgres] up after ${i}s"; role; pods; exit 0; fi
  sleep 1
done
echo "[postgres] PostgreSQL did not start within 60 s; see /var/log/postgresql/postgresql-$VERSION-main.log" >&2
exit 1
