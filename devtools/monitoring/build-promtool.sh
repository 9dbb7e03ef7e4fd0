#!/usr/bin/env bash
# Build Prometheus' `promtool` (github.com/prometheus/prometheus/cmd/promtool), once, into the
# project's cache, keyed by version. The Go module proxy is the only source: no git, no release
# downloads.
#
#   devtools/monitoring/build-promtool.sh     # the pinned release; prints the bin directory
#
# Environment:
#   LIMETASK_CACHE   cache root (default: ${XDG_CACHE_HOME:-~/.cache}/limetask)
#
# The chart's tests check its PrometheusRule with it (`promtool check rules`, and `promtool test
# rules`: each alert fires on the series it is written for, and stays quiet otherwise), and parse
# the Grafana dashboard's queries (as recording rules, `promtool check rules`). It is built with the build tag
# remove_all_sd, which leaves out Prometheus' service discovery plugins (the clouds' SDKs): promtool
# needs none of them to check rules. Prometheus' go.mod has no local replacements, so a small
# wrapper module that requires the release builds it with exactly the dependencies it names.
#
# Every step says what it does, the compile shows progress, and a failed step says which.
set -Eeuo pipefail

# The one place the Prometheus version is decided (README, "Dependencies and versions"). Its Go
# module is versioned v0.<minor>.<patch> for Prometheus 3.<minor>.<patch>.
PROMETHEUS_VERSION=0.316.0

CACHE=${LIMETASK_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/limetask}
ROOT="$CACHE/promtool-$PROMETHEUS_VERSION"
BIN="$ROOT/bin"
WORK="$ROOT/build"

step=""
log() { printf '[build-promtool %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
fail() {
  local rc=$?
  printf '\n[build-promtool] FAILED at step: %s (exit %s)\n' "$step" "$rc" >&2
  case "$step" in
    go) printf '[build-promtool] needs a Go that the release accepts (go on PATH, or GOTOOLCHAIN)\n' >&2 ;;
    modules) printf '[build-promtool] the Go module proxy refused a module; the output above names it\n' >&2 ;;
    compile) printf '[build-promtool] the Go build failed; see the output above. Log: %s\n' "$WORK/build.log" >&2 ;;
  esac
  exit "$rc"
}
trap fail ERR

if [ -x "$BIN/promtool" ]; then
  echo "$BIN"
  exit 0
fi

step=go
command -v go >/dev/null || { log "no go on PATH"; false; }
export GOPATH="$ROOT/gopath" GOCACHE="$ROOT/gocache" GOFLAGS=-mod=mod CGO_ENABLED=0 GOTELEMETRY=off
log "Go: $(go version)"
mkdir -p "$WORK" "$BIN"
: > "$WORK/build.log"

step=modules
log "step 1/2: Prometheus v$PROMETHEUS_VERSION modules from the Go module proxy"
rm -rf "$WORK/mod" && mkdir -p "$WORK/mod"
cd "$WORK/mod"
go mod init limetask.local/build-promtool >/dev/null 2>&1
module=github.com/prometheus/prometheus
gomod=$(go mod download -json "$module@v$PROMETHEUS_VERSION" | sed -n 's/^\s*"GoMod": "\(.*\)",\?$/\1/p')
[ -f "$gomod" ] || { log "no go.mod for $module@v$PROMETHEUS_VERSION"; false; }
if grep -q '^replace' "$gomod"; then
  log "$module@v$PROMETHEUS_VERSION has replace directives: this script builds only releases without them"
  false
fi
# The release's own Go language version, so that the build sees what upstream sees.
gover=$(sed -n 's/^go \([0-9.]*\)$/\1/p' "$gomod")
[ -n "$gover" ] && go mod edit -go="$gover"
go get "$module/cmd/promtool@v$PROMETHEUS_VERSION" >>"$WORK/build.log" 2>&1 || { tail -n 30 "$WORK/build.log" >&2; false; }

step=compile
IFS=. read -r _ minor patch <<<"$PROMETHEUS_VERSION"
release="3.$((10#$minor - 300)).$patch"
log "step 2/2: compile promtool (a few minutes on 2 cores; progress every 30 s)"
start=$(date +%s)
(
  go build -trimpath -tags remove_all_sd \
    -ldflags "-s -w -X github.com/prometheus/common/version.Version=$release" \
    -o "$BIN/promtool.tmp" "$module/cmd/promtool" >>"$WORK/build.log" 2>&1 &&
  mv "$BIN/promtool.tmp" "$BIN/promtool"
) &
pid=$!
while kill -0 "$pid" 2>/dev/null; do
  sleep 30 & wait $! || true
  kill -0 "$pid" 2>/dev/null && log "  still compiling promtool ($(( $(date +%s) - start ))s)"
done
wait "$pid" || { tail -n 30 "$WORK/build.log" >&2; false; }
log "  promtool: $(( $(date +%s) - start ))s"

step=install
cd "$ROOT"
[ -x "$BIN/promtool" ] || { log "promtool is missing from $BIN"; false; }
go clean -modcache >/dev/null 2>&1 || true
rm -rf "$WORK" "$GOPATH" "$GOCACHE"
log "done: $BIN"
echo "$BIN"
