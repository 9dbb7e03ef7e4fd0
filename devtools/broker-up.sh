#!/usr/bin/env bash
# Make sure a RabbitMQ broker listens on 127.0.0.1:5672 for the tests: start it when it is
# installed but not running, install it (Debian) when it is missing.
set -euo pipefail
port_open() { (exec 3<>/dev/tcp/127.0.0.1/5672) 2>/dev/null; }
# Pods of the local cluster reach the broker at the node's bridge address, and RabbitMQ lets
# its `guest` user in from loopback only: they log in as this user (test credentials of a
# broker that listens on this machine alone).
pod_user() {
  if ! rabbitmqctl -q list_users 2>/dev/null | grep -q '^limetask-pods\b'; then
    rabbitmqctl -q add_user limetask-pods limetask-pods >/dev/null
    rabbitmqctl -q set_permissions -p / limetask-pods '.*' '.*' '.*' >/dev/null
    echo "[broker] added the user limetask-pods (for the local cluster's pods)"
  fi
}
if port_open; then
  echo "[broker] RabbitMQ is listening on 127.0.0.1:5672"
  pod_user
  exit 0
fi
if ! command -v rabbitmq-server >/dev/null; then
  echo "[broker] installing rabbitmq-server"
  if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
  $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq rabbitmq-server
fi
echo "[broker] starting rabbitmq-server"
rabbitmq-server -detached >/dev/null 2>&1 || true
for i in $(seq 1 60); do
  if port_open; then echo "[broker] up after ${i}s"; pod_user; exit 0; fi
  sleep 1
done
echo "[broker] RabbitMQ did not start within 60 s; see /var/log/rabbitmq" >&2
exit 1
