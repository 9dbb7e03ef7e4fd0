#!/usr/bin/env bash
# The Prometheus operator's CustomResourceDefinitions of ServiceMonitor and PrometheusRule
# (monitoring.coreos.com/v1), once, into the project's cache, keyed by version. They come from the
# operator's Go module (its example/prometheus-operator-crd/ folder), which the Go module proxy
# serves: no git, no release downloads.
#
#   devtools/monitoring/prometheus-operator-crds.sh   # prints the folder holding the two CRDs
#
# Environment:
#   LIMETASK_CACHE   cache root (default: ${XDG_CACHE_HOME:-~/.cache}/limetask)
#
# The chart's end-to-end test applies them, so that the API server checks the chart's
# ServiceMonitor and PrometheusRule against the real schemas.
set -Eeuo pipefail

# The one place the Prometheus operator version is decided (README, "Dependencies and versions").
PROMETHEUS_OPERATOR_VERSION=0.94.1

CACHE=${LIMETASK_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/limetask}
ROOT="$CACHE/prometheus-operator-$PROMETHEUS_OPERATOR_VERSION"
CRDS="$ROOT/crds"
FILES=(monitoring.coreos.com_servicemonitors.yaml monitoring.coreos.com_prometheusrules.yaml)

log() { printf '[prometheus-operator-crds %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

complete=1
for f in "${FILES[@]}"; do [ -s "$CRDS/$f" ] || complete=0; done
if [ "$complete" = 1 ]; then
  echo "$CRDS"
  exit 0
fi

command -v go >/dev/null || { log "no go on PATH: the CRDs come from the Go module proxy"; exit 1; }
module=github.com/prometheus-operator/prometheus-operator
export GOMODCACHE="$ROOT/gomod" GOFLAGS=-mod=mod GOTELEMETRY=off
log "the CRDs of $module@v$PROMETHEUS_OPERATOR_VERSION, from the Go module proxy"
mkdir -p "$ROOT"
dir=$(cd "$ROOT" && go mod download -json "$module@v$PROMETHEUS_OPERATOR_VERSION" \
  | sed -n 's/^\s*"Dir": "\(.*\)",\?$/\1/p')
[ -d "$dir/example/prometheus-operator-crd" ] || { log "no example/prometheus-operator-crd in $module@v$PROMETHEUS_OPERATOR_VERSION"; exit 1; }
mkdir -p "$CRDS.tmp"
for f in "${FILES[@]}"; do
  [ -s "$dir/example/prometheus-operator-crd/$f" ] || { log "$f is missing from the module"; exit 1; }
  cp "$dir/example/prometheus-operator-crd/$f" "$CRDS.tmp/$f"
done
chmod u+w "$CRDS.tmp"/*
rm -rf "$CRDS" && mv "$CRDS.tmp" "$CRDS"
go clean -modcache >/dev/null 2>&1 || true
rm -rf "$GOMODCACHE"
log "done: $CRDS"
echo "$CRDS"
