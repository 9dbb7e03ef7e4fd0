#!/usr/bin/env bash
# Make sure a RabbitMQ broker listens on 127.0.0.1:5672 for the tests: start it when it is
# installed but not running, install it (Debian) when it is missing.
set -euo pipefail
port_open() { (exec 3<>/dev/tcp/127.0.0.1/5672) 2>/dev/null; }
if port_open; then
  echo "[broker] RabbitMQ is listening on 127.0.0.1:5672"
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
  if port_open; then echo "[broker] up after ${i}s"; exit 0; fi
  sleep 1
done
echo "[broker] RabbitMQ did not start within 60 s; see /var/log/rabbitmq" >&2
exit 1
