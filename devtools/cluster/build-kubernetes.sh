#!/usr/bin/env bash
# Build a current Kubernetes release (kube-apiserver, kube-controller-manager, kube-scheduler,
# kubelet, kubectl), the etcd it supports and containerd 2 from Go modules, once, into a cache
# keyed by version. The Go module proxy is the only source: no git, no release downloads.
#
#   devtools/cluster/build-kubernetes.sh              # the default release; prints the bin directory
#   devtools/cluster/build-kubernetes.sh 1.36.3       # another supported release
#
# Environment:
#   LIMETASK_CACHE        cache root (default: ${XDG_CACHE_HOME:-~/.cache}/limetask)
#   LIMETASK_K8S_VERSION  release to build when no argument is given
#
# How: Kubernetes' own go.mod points its staging modules (k8s.io/api, k8s.io/client-go, ...)
# at folders of its repository, which a module download does not have. A small wrapper module
# requires k8s.io/kubernetes at the release and replaces each staging module with its
# published twin (v0.<minor>.<patch>). etcd's server module is built the same way.
#
# Every step says what it does, long ones show progress, and a failed step says which.
set -Eeuo pipefail

DEFAULT_K8S_VERSION=1.37.2
# Minors this script is known to build; the newest is the one CI tests on.
SUPPORTED_MINORS="1.35 1.36 1.37"
ETCD_VERSION=3.6.16
CONTAINERD_VERSION=2.4.2

K8S_VERSION=${1:-${LIMETASK_K8S_VERSION:-$DEFAULT_K8S_VERSION}}
K8S_VERSION=${K8S_VERSION#v}
CACHE=${LIMETASK_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/limetask}
ROOT="$CACHE/k8s-$K8S_VERSION"
BIN="$ROOT/bin"
WORK="$ROOT/build"
K8S_BINARIES=(kube-apiserver kube-controller-manager kube-scheduler kubelet kubectl)
CONTAINERD_BINARIES=(containerd containerd-shim-runc-v2 ctr)
# pause: the sandbox's process, a static C program from the release's own source.
BINARIES=("${K8S_BINARIES[@]}" pause etcd "${CONTAINERD_BINARIES[@]}")

step=""
log() { printf '[build %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
fail() {
  local rc=$?
  printf '\n[build] FAILED at step: %s (exit %s)\n' "$step" "$rc" >&2
  case "$step" in
    version) ;;
    go) printf '[build] needs a Go that the release accepts (go on PATH, or GOTOOLCHAIN)\n' >&2 ;;
    modules) printf '[build] the Go module proxy refused a module; the output above names it\n' >&2 ;;
    compile*) printf '[build] the Go build failed; see the output above. Log: %s\n' "$WORK/build.log" >&2 ;;
  esac
  exit "$rc"
}
trap fail ERR

step=version
minor=$(echo "$K8S_VERSION" | cut -d. -f1,2)
patch=$(echo "$K8S_VERSION" | cut -d. -f3)
if ! [[ "$K8S_VERSION" =~ ^1\.[0-9]+\.[0-9]+$ ]]; then
  log "not a Kubernetes release: '$K8S_VERSION' (expected 1.MINOR.PATCH, e.g. $DEFAULT_K8S_VERSION)"
  false
fi
case " $SUPPORTED_MINORS " in
  *" $minor "*) ;;
  *) log "Kubernetes $minor is not one of the supported minors ($SUPPORTED_MINORS)"; false ;;
esac
staging_version="v0.${minor#1.}.$patch"

have_all() { for b in "${BINARIES[@]}"; do [ -x "$BIN/$b" ] || return 1; done; }
if have_all; then
  echo "$BIN"
  exit 0
fi

step=go
command -v go >/dev/null || { log "no go on PATH"; false; }
export GOPATH="$ROOT/gopath" GOCACHE="$ROOT/gocache" GOFLAGS=-mod=mod CGO_ENABLED=0
# A build is a build: no telemetry, no VCS stamping of a folder that is not a repository.
export GOTELEMETRY=off
log "Go: $(go version)"

mkdir -p "$WORK" "$BIN"
# Binaries of an interrupted build of an earlier version of this script.
if [ -d "$BIN.tmp" ]; then
  for f in "$BIN.tmp"/*; do [ -x "$f" ] && mv -n "$f" "$BIN/"; done
  rm -rf "$BIN.tmp"
fi
: > "$WORK/build.log"

# compile LABEL OUT PKG [ldflags]: go build with progress every 30 s; a binary already in the
# cache is kept, so a build that failed half-way resumes where it stopped.
compile() {
  local label=$1 out=$2 pkg=$3 ldflags=${4:-}
  [ -x "$out" ] && { log "  $label: cached"; return 0; }
  step="compile $label"
  local start; start=$(date +%s)
  ( go build -trimpath -ldflags "-s -w $ldflags" -o "$out.tmp" "$pkg" >>"$WORK/build.log" 2>&1 && mv "$out.tmp" "$out" ) &
  local pid=$!
  while kill -0 "$pid" 2>/dev/null; do
    sleep 30 & wait $! || true
    kill -0 "$pid" 2>/dev/null && log "  still compiling $label ($(( $(date +%s) - start ))s)"
  done
  wait "$pid" || { tail -n 30 "$WORK/build.log" >&2; false; }
  log "  $label: $(( $(date +%s) - start ))s"
}

# wrapper DIR MODULE VERSION: a module that requires MODULE@VERSION and replaces each of its
# folder-relative replacements (`=> ./staging/...`, `=> ../api`) with the published module.
wrapper() {
  local dir=$1 module=$2 version=$3 subversion=$4
  rm -rf "$dir" && mkdir -p "$dir"
  (
    cd "$dir"
    go mod init limetask.local/build >/dev/null 2>&1
    local gomod
    gomod=$(go mod download -json "$module@$version" | sed -n 's/^\s*"GoMod": "\(.*\)",\?$/\1/p')
    [ -f "$gomod" ] || { log "no go.mod for $module@$version"; return 1; }
    # Keep the release's own Go language version, so that the build sees what upstream sees.
    local gover; gover=$(sed -n 's/^go \([0-9.]*\)$/\1/p' "$gomod")
    [ -n "$gover" ] && go mod edit -go="$gover"
    go mod edit -require="$module@$version"
    # Local replacements become published modules; other replacements are copied as they are.
    awk '/^replace \($/{inblock=1; next} inblock && /^\)/{inblock=0; next}
         inblock{print; next} /^replace /{sub(/^replace /,""); print}' "$gomod" |
    while read -r from arrow to rest; do
      [ "$arrow" = "=>" ] || continue
      case "$to" in
        *FORBIDDEN*) ;;  # upstream's guard against importing a module by mistake: not needed here
        ./*|../*) go mod edit -replace="$from=$from@$subversion" ;;
        *) [ -n "$rest" ] && go mod edit -replace="$from=$to@$rest" || go mod edit -replace="$from=$to" ;;
      esac
    done
  )
}

step=modules
log "step 1/4: Kubernetes $K8S_VERSION modules (staging modules at $staging_version) from the Go module proxy"
wrapper "$WORK/k8s" k8s.io/kubernetes "v$K8S_VERSION" "$staging_version"
(cd "$WORK/k8s" && go get "k8s.io/kubernetes/cmd/kube-apiserver@v$K8S_VERSION" >>"$WORK/build.log" 2>&1) ||
  { tail -n 30 "$WORK/build.log" >&2; false; }

log "step 2/4: compile ${K8S_BINARIES[*]} (several minutes each on 2 cores; progress every 30 s)"
vpkg=k8s.io/component-base/version
now=$(date -u +%Y-%m-%dT%H:%M:%SZ)
ld="-X $vpkg.gitVersion=v$K8S_VERSION -X $vpkg.gitMajor=1 -X $vpkg.gitMinor=${minor#1.}"
ld="$ld -X $vpkg.gitTreeState=clean -X $vpkg.buildDate=$now"
ld="$ld -X k8s.io/client-go/pkg/version.gitVersion=v$K8S_VERSION -X k8s.io/client-go/pkg/version.gitMajor=1"
ld="$ld -X k8s.io/client-go/pkg/version.gitMinor=${minor#1.}"
for b in "${K8S_BINARIES[@]}"; do
  (cd "$WORK/k8s" && compile "$b" "$BIN/$b" "k8s.io/kubernetes/cmd/$b" "$ld")
done
step="compile pause"
if [ ! -x "$BIN/pause" ]; then
  command -v gcc >/dev/null || { log "gcc is needed for pause (apt-get install -y gcc libc6-dev)"; false; }
  src=$(cd "$WORK/k8s" && go mod download -json "k8s.io/kubernetes@v$K8S_VERSION" | sed -n 's/^\s*"Dir": "\(.*\)",\?$/\1/p')
  gcc -Os -static -DVERSION="v$K8S_VERSION" -o "$BIN/pause.tmp" "$src/build/pause/linux/pause.c"
  mv "$BIN/pause.tmp" "$BIN/pause"
  log "  pause: built"
fi

step=modules
log "step 3/4: etcd $ETCD_VERSION"
wrapper "$WORK/etcd" go.etcd.io/etcd/server/v3 "v$ETCD_VERSION" "v$ETCD_VERSION"
(cd "$WORK/etcd" && go get "go.etcd.io/etcd/server/v3@v$ETCD_VERSION" >>"$WORK/build.log" 2>&1) ||
  { tail -n 30 "$WORK/build.log" >&2; false; }
(cd "$WORK/etcd" && compile etcd "$BIN/etcd" go.etcd.io/etcd/server/v3 \
  "-X go.etcd.io/etcd/api/v3/version.GitSHA=v$ETCD_VERSION")

step=modules
log "step 4/4: containerd $CONTAINERD_VERSION (Kubernetes 1.36 and later want containerd 2)"
wrapper "$WORK/containerd" github.com/containerd/containerd/v2 "v$CONTAINERD_VERSION" "v$CONTAINERD_VERSION"
(cd "$WORK/containerd" && go get "github.com/containerd/containerd/v2/cmd/containerd@v$CONTAINERD_VERSION" >>"$WORK/build.log" 2>&1) ||
  { tail -n 30 "$WORK/build.log" >&2; false; }
cld="-X github.com/containerd/containerd/v2/version.Version=v$CONTAINERD_VERSION"
for b in "${CONTAINERD_BINARIES[@]}"; do
  (cd "$WORK/containerd" && compile "$b" "$BIN/$b" "github.com/containerd/containerd/v2/cmd/$b" "$cld")
done

step=install
have_all || { log "some binaries are missing from $BIN"; false; }
go clean -modcache >/dev/null 2>&1 || true
rm -rf "$WORK" "$GOPATH" "$GOCACHE"
log "done: $BIN"
echo "$BIN"
