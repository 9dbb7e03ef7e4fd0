#!/usr/bin/env bash
# Build Kueue's manager (`kueue`, sigs.k8s.io/kueue), once, into the same cache as the Kubernetes
# binaries, keyed by version, with the manifests the local cluster installs it from (its CRDs and
# its webhook paths). The Go module proxy is the only source: no git, no release downloads.
#
#   devtools/cluster/build-kueue.sh           # the pinned release; prints the version's directory
#
# Environment:
#   LIMETASK_CACHE   cache root (default: ${XDG_CACHE_HOME:-~/.cache}/limetask)
#
# Output (under $LIMETASK_CACHE/kueue-<version>/):
#   bin/kueue                                  the manager
#   config/crd/bases/*.yaml                    config/components/crd/bases of the module
#   config/crd/patches/webhook_in_*.yaml       which CRDs convert their versions by webhook
#   config/webhook/manifests.yaml              config/components/webhook/manifests.yaml
#
# Kueue's go.mod has no local replacements, so a small wrapper module that requires the release
# builds it as it is, with exactly the dependencies the release names. An interrupted build
# resumes: the downloaded modules and Go's build cache stay until the binary is in place.
#
# Every step says what it does, the compile shows progress, and a failed step says which.
set -Eeuo pipefail

# The one place the Kueue version is decided (README, "Dependencies and versions").
KUEUE_VERSION=0.17.0

CACHE=${LIMETASK_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/limetask}
ROOT="$CACHE/kueue-$KUEUE_VERSION"
BIN="$ROOT/bin"
CONFIG="$ROOT/config"
WORK="$ROOT/build"

step=""
log() { printf '[build-kueue %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
fail() {
  local rc=$?
  printf '\n[build-kueue] FAILED at step: %s (exit %s)\n' "$step" "$rc" >&2
  case "$step" in
    go) printf '[build-kueue] needs a Go that the release accepts (go on PATH, or GOTOOLCHAIN)\n' >&2 ;;
    modules) printf '[build-kueue] the Go module proxy refused a module; the output above names it (GOPROXY=%s)\n' "$(go env GOPROXY 2>/dev/null)" >&2 ;;
    compile) printf '[build-kueue] the Go build failed; see the output above. Log: %s\n' "$WORK/build.log" >&2 ;;
  esac
  exit "$rc"
}
trap fail ERR

if [ -x "$BIN/kueue" ] && [ -f "$CONFIG/webhook/manifests.yaml" ] && ls "$CONFIG"/crd/bases/*.yaml >/dev/null 2>&1; then
  echo "$ROOT"
  exit 0
fi

step=go
command -v go >/dev/null || { log "no go on PATH"; false; }
export GOPATH="$ROOT/gopath" GOCACHE="$ROOT/gocache" GOFLAGS=-mod=mod CGO_ENABLED=0 GOTELEMETRY=off
log "Go: $(go version)"
mkdir -p "$WORK" "$BIN"
: > "$WORK/build.log"

step=modules
log "step 1/3: Kueue $KUEUE_VERSION from the Go module proxy"
rm -rf "$WORK/mod" && mkdir -p "$WORK/mod"
cd "$WORK/mod"
go mod init limetask.local/build-kueue >/dev/null 2>&1
download=$(go mod download -json "sigs.k8s.io/kueue@v$KUEUE_VERSION" 2>&1) || { echo "$download" >&2; false; }
gomod=$(echo "$download" | sed -n 's/^\s*"GoMod": "\(.*\)",\?$/\1/p')
src=$(echo "$download" | sed -n 's/^\s*"Dir": "\(.*\)",\?$/\1/p')
[ -f "$gomod" ] && [ -d "$src" ] || { log "no module source for sigs.k8s.io/kueue@v$KUEUE_VERSION"; echo "$download" >&2; false; }
if grep -q '^replace' "$gomod"; then
  log "sigs.k8s.io/kueue@v$KUEUE_VERSION has replace directives: this script builds only releases without them"
  false
fi
# The release's own Go language version, so that the build sees what upstream sees.
gover=$(sed -n 's/^go \([0-9.]*\)$/\1/p' "$gomod")
[ -n "$gover" ] && go mod edit -go="$gover"

step=manifests
log "step 2/3: the release's CRDs and webhook paths"
rm -rf "$CONFIG.tmp" && mkdir -p "$CONFIG.tmp/crd/bases" "$CONFIG.tmp/crd/patches" "$CONFIG.tmp/webhook"
cp "$src"/config/components/crd/bases/*.yaml "$CONFIG.tmp/crd/bases/"
# Only the conversion patches the release's kustomization applies (some are commented out there).
for patch in $(sed -n 's|^- path: \(patches/webhook_in_[a-z]*\.yaml\)$|\1|p' "$src/config/components/crd/kustomization.yaml"); do
  cp "$src/config/components/crd/$patch" "$CONFIG.tmp/crd/patches/"
done
cp "$src/config/components/webhook/manifests.yaml" "$CONFIG.tmp/webhook/"
chmod -R u+w "$CONFIG.tmp"
rm -rf "$CONFIG" && mv "$CONFIG.tmp" "$CONFIG"

step=compile
if [ -x "$BIN/kueue" ]; then
  log "step 3/3: kueue: cached"
else
  step=modules
  log "step 3/3: the modules kueue needs, from the Go module proxy"
  go get "sigs.k8s.io/kueue/cmd/kueue@v$KUEUE_VERSION" >>"$WORK/build.log" 2>&1 || { tail -n 30 "$WORK/build.log" >&2; false; }
  step=compile
  log "  compile kueue (many minutes on 2 cores; progress every 30 s)"
  start=$(date +%s)
  (
    go build -trimpath -ldflags "-s -w -X sigs.k8s.io/kueue/pkg/version.GitVersion=v$KUEUE_VERSION" \
      -o "$BIN/kueue.tmp" sigs.k8s.io/kueue/cmd/kueue >>"$WORK/build.log" 2>&1 &&
    mv "$BIN/kueue.tmp" "$BIN/kueue"
  ) &
  pid=$!
  while kill -0 "$pid" 2>/dev/null; do
    sleep 30 & wait $! || true
    kill -0 "$pid" 2>/dev/null && log "  still compiling kueue ($(( $(date +%s) - start ))s)"
  done
  wait "$pid" || { tail -n 30 "$WORK/build.log" >&2; false; }
  log "  kueue: $(( $(date +%s) - start ))s"
fi

step=install
cd "$ROOT"
[ -x "$BIN/kueue" ] || { log "kueue is missing from $BIN"; false; }
go clean -modcache >/dev/null 2>&1 || true
rm -rf "$WORK" "$GOPATH" "$GOCACHE"
log "done: $ROOT"
echo "$ROOT"
