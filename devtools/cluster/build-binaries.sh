#!/usr/bin/env bash
# Build kube-apiserver, kube-controller-manager and kubectl from Debian's own
# `kubernetes` source package, once, into a cache keyed by version.
#
#   devtools/cluster/build-binaries.sh            # prints the bin directory
#
# Environment:
#   LIMETASK_CACHE   cache root (default: ${XDG_CACHE_HOME:-~/.cache}/limetask)
#
# Every step says what it does; a failed step says which one and what to install.
set -euo pipefail

K8S_SOURCE_PACKAGE=kubernetes
K8S_VERSION=1.20.2
CACHE=${LIMETASK_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/limetask}
BIN="$CACHE/k8s-$K8S_VERSION/bin"
WORK="$CACHE/k8s-$K8S_VERSION/build"
BINARIES=(kube-apiserver kube-controller-manager kubectl)
# Kubernetes 1.20 builds with Debian's Go 1.19 (package golang-1.19-go); a newer `go` on PATH
# does not build it, so the build always uses this one, whatever PATH says.
GO_ROOT=/usr/lib/go-1.19

step=""
log() { printf '[build %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
fail() {
  local rc=$?
  printf '\n[build] FAILED at step: %s (exit %s)\n' "$step" "$rc" >&2
  case "$step" in
    deps) printf '[build] install the build dependencies: apt-get install -y golang-1.19-go rsync jq dpkg-dev golang-github-modern-go-reflect2-dev etcd-server\n' >&2 ;;
    source) printf '[build] apt-get source needs dpkg-dev and a reachable Debian mirror (deb-src for the suites in /etc/apt/sources.list.d/debian.sources)\n' >&2 ;;
    compile) printf '[build] the Go build failed; see the output above. Go 1.19 (golang-1.19-go) is what this was tested with. Log: %s\n' "$WORK/make.log" >&2 ;;
  esac
  exit "$rc"
}
trap fail ERR

have_all() { for b in "${BINARIES[@]}"; do [ -x "$BIN/$b" ] || return 1; done; }

if have_all; then
  echo "$BIN"
  exit 0
fi

step=deps
log "step 1/5: build dependencies"
missing=()
[ -x "$GO_ROOT/bin/go" ] || missing+=(golang-1.19-go)
for cmd in rsync jq dpkg-source; do command -v "$cmd" >/dev/null || missing+=("$cmd"); done
[ -d /usr/share/gocode/src/github.com/modern-go/reflect2 ] || missing+=(reflect2)
if [ ${#missing[@]} -gt 0 ]; then
  log "missing: ${missing[*]}; installing with apt-get"
  if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq golang-1.19-go rsync jq dpkg-dev golang-github-modern-go-reflect2-dev >&2
fi

step=source
rm -rf "$WORK"
mkdir -p "$WORK/apt/sources.list.d" "$WORK/apt/lists/partial" "$WORK/src"
log "step 2/5: fetch Debian's '$K8S_SOURCE_PACKAGE' source package (deb-src from this machine's own sources)"
# A private sources list derived from the machine's own: same mirrors, Types: deb-src.
src_list=""
for f in /etc/apt/sources.list.d/*.sources; do [ -f "$f" ] && src_list="$src_list $f"; done
if [ -n "$src_list" ]; then
  # shellcheck disable=SC2086
  sed -E 's/^Types:.*/Types: deb-src/' $src_list > "$WORK/apt/sources.list.d/limetask-src.sources"
elif [ -f /etc/apt/sources.list ]; then
  grep -E '^deb ' /etc/apt/sources.list | sed -E 's/^deb /deb-src /' > "$WORK/apt/sources.list.d/limetask-src.list"
fi
APT_OPTS=(-o "Dir::Etc::SourceList=/dev/null" -o "Dir::Etc::SourceParts=$WORK/apt/sources.list.d"
          -o "Dir::State::Lists=$WORK/apt/lists" -o "Debug::NoLocking=1")
apt-get "${APT_OPTS[@]}" update -qq >&2
(cd "$WORK/src" && apt-get "${APT_OPTS[@]}" source -qq "$K8S_SOURCE_PACKAGE" >&2)
TREE=$(find "$WORK/src" -mindepth 1 -maxdepth 1 -type d -name "${K8S_SOURCE_PACKAGE}-*" | head -n1)
[ -n "$TREE" ] && [ -d "$TREE/vendor" ] || { log "no source tree with vendor/ under $WORK/src"; false; }
got=$(cd "$TREE" && sed -n 's/^gitVersion=//p' .dockerized-kube-version-defs 2>/dev/null || true)
log "source tree: $(basename "$TREE") ${got}"

step=patch
log "step 3/5: replace vendored modern-go/reflect2 1.0.1 with Debian's 1.0.2 (1.0.1 segfaults under Go >= 1.18)"
rm -rf "$TREE/vendor/github.com/modern-go/reflect2"
cp -r /usr/share/gocode/src/github.com/modern-go/reflect2 "$TREE/vendor/github.com/modern-go/reflect2"
sed -i 's#^\# github.com/modern-go/reflect2 v1.0.1#\# github.com/modern-go/reflect2 v1.0.2#' "$TREE/vendor/modules.txt" || true

step=compile
export GOPATH="$WORK/gopath" GOROOT="$GO_ROOT" PATH="$GO_ROOT/bin:$PATH" GOTOOLCHAIN=local
log "Go: $(go version)"
mkdir -p "$GOPATH/src/k8s.io"
ln -sfn "$TREE" "$GOPATH/src/k8s.io/kubernetes"
log "step 4/5: compile ${BINARIES[*]} (about 5 minutes on 2 cores; progress every 30 s)"
(
  cd "$GOPATH/src/k8s.io/kubernetes"
  export GO111MODULE=off GOFLAGS=-mod=vendor KUBE_GIT_VERSION="v$K8S_VERSION" KUBE_GIT_TREE_STATE=clean
  make WHAT="cmd/kube-apiserver cmd/kube-controller-manager cmd/kubectl" > "$WORK/make.log" 2>&1 &
  pid=$!
  start=$(date +%s)
  while kill -0 "$pid" 2>/dev/null; do
    sleep 30 & wait $! || true
    kill -0 "$pid" 2>/dev/null && log "  still compiling ($(( $(date +%s) - start ))s): $(tail -n1 "$WORK/make.log" | cut -c1-100)"
  done
  wait "$pid"
) || { tail -n 30 "$WORK/make.log" >&2; false; }

step=install
log "step 5/5: cache binaries in $BIN"
mkdir -p "$BIN.tmp"
for b in "${BINARIES[@]}"; do
  cp "$GOPATH/src/k8s.io/kubernetes/_output/bin/$b" "$BIN.tmp/$b"
done
rm -rf "$BIN" && mv "$BIN.tmp" "$BIN"
rm -rf "$WORK"
log "done"
echo "$BIN"
