#!/usr/bin/env bash
# Build KWOK's controller (`kwok`, sigs.k8s.io/kwok), once, into the same cache as the Kubernetes
# binaries, keyed by version. The Go module proxy is the only source: no git, no release downloads.
#
#   devtools/cluster/build-kwok.sh            # the pinned release; prints the bin directory
#
# Environment:
#   LIMETASK_CACHE   cache root (default: ${XDG_CACHE_HOME:-~/.cache}/limetask)
#
# KWOK manages simulated nodes and drives their pods through their lifecycle by Stages
# (devtools/kwok/stages.yaml): the soak runs the operator against thousands of pods that cost no
# container. Its go.mod has no local replacements, so a small wrapper module that requires the
# release builds it as it is, with exactly the dependencies the release names.
#
# Every step says what it does, the compile shows progress, and a failed step says which.
set -Eeuo pipefail

# The one place the KWOK version is decided (README, "Dependencies and versions").
KWOK_VERSION=0.8.0

CACHE=${LIMETASK_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/limetask}
ROOT="$CACHE/kwok-$KWOK_VERSION"
BIN="$ROOT/bin"
WORK="$ROOT/build"

step=""
log() { printf '[build-kwok %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
fail() {
  local rc=$?
  printf '\n[build-kwok] FAILED at step: %s (exit %s)\n' "$step" "$rc" >&2
  case "$step" in
    go) printf '[build-kwok] needs a Go that the release accepts (go on PATH, or GOTOOLCHAIN)\n' >&2 ;;
    modules) printf '[build-kwok] the Go module proxy refused a module; the output above names it\n' >&2 ;;
    compile) printf '[build-kwok] the Go build failed; see the output above. Log: %s\n' "$WORK/build.log" >&2 ;;
  esac
  exit "$rc"
}
trap fail ERR

if [ -x "$BIN/kwok" ]; then
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
log "step 1/2: KWOK $KWOK_VERSION modules from the Go module proxy"
rm -rf "$WORK/mod" && mkdir -p "$WORK/mod"
cd "$WORK/mod"
go mod init limetask.local/build-kwok >/dev/null 2>&1
gomod=$(go mod download -json "sigs.k8s.io/kwok@v$KWOK_VERSION" | sed -n 's/^\s*"GoMod": "\(.*\)",\?$/\1/p')
[ -f "$gomod" ] || { log "no go.mod for sigs.k8s.io/kwok@v$KWOK_VERSION"; false; }
if grep -q '^replace' "$gomod"; then
  log "sigs.k8s.io/kwok@v$KWOK_VERSION has replace directives: this script builds only releases without them"
  false
fi
# The release's own Go language version, so that the build sees what upstream sees.
gover=$(sed -n 's/^go \([0-9.]*\)$/\1/p' "$gomod")
[ -n "$gover" ] && go mod edit -go="$gover"
go get "sigs.k8s.io/kwok/cmd/kwok@v$KWOK_VERSION" >>"$WORK/build.log" 2>&1 || { tail -n 30 "$WORK/build.log" >&2; false; }

step=compile
log "step 2/2: compile kwok (a few minutes on 2 cores; progress every 30 s)"
start=$(date +%s)
(
  go build -trimpath -ldflags "-s -w -X sigs.k8s.io/kwok/pkg/consts.Version=$KWOK_VERSION" \
    -o "$BIN/kwok.tmp" sigs.k8s.io/kwok/cmd/kwok >>"$WORK/build.log" 2>&1 &&
  mv "$BIN/kwok.tmp" "$BIN/kwok"
) &
pid=$!
while kill -0 "$pid" 2>/dev/null; do
  sleep 30 & wait $! || true
  kill -0 "$pid" 2>/dev/null && log "  still compiling kwok ($(( $(date +%s) - start ))s)"
done
wait "$pid" || { tail -n 30 "$WORK/build.log" >&2; false; }
log "  kwok: $(( $(date +%s) - start ))s"

step=install
cd "$ROOT"
[ -x "$BIN/kwok" ] || { log "kwok is missing from $BIN"; false; }
go clean -modcache >/dev/null 2>&1 || true
rm -rf "$WORK" "$GOPATH" "$GOCACHE"
log "done: $BIN"
echo "$BIN"
