# What the image builds share, sourced by build-images.sh (the project's images) and
# build-solution.sh (a solution's runner image for `limetask dev`): one set of podman settings,
# one cache, one lock, one way to key, build and save an image. Not run by itself.
#
# The sourcing script sets `set -Eeuo pipefail` and OUT (where tarballs go) first; this file
# sets the traps that name a failed step (fail) and remove a scratch folder (cleanup).

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
CACHE=${LIMETASK_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/limetask}
IMAGES="$CACHE/images"
LOGS="$IMAGES/logs"
# The runner base image; solution images build FROM it.
RUNNER_IMAGE=localhost/limetask/runner:dev
KEY_LABEL=limetask.context-key

PODMAN=(podman)
if [ -n "${LIMETASK_PODMAN_ROOT:-}" ]; then
  PODMAN+=(--root "$LIMETASK_PODMAN_ROOT/storage" --runroot "$LIMETASK_PODMAN_ROOT/run")
fi
RUN_FLAGS=(--runtime runc --ulimit nofile=1024:4096 --ulimit nproc=1024:4096)
# No layer cache (this script's keys decide what to rebuild): podman 4.3's buildah cannot
# RUN --mount=type=bind,from=STAGE when STAGE came from the cache ("couldn't find .../merged/
# wheels on host to bind mount"), and may reuse a cached RUN that mounted an older STAGE.
BUILD_FLAGS=("${RUN_FLAGS[@]}" --network host --pull=never --layers=false)
# pip in RUN steps trusts the image's /etc/ssl/certs/ca-certificates.crt (Debian's pip does); a
# host behind a TLS-inspecting proxy trusts more. RUN steps see the host's bundle in its place,
# the images keep Debian's.
CA_BUNDLE=${LIMETASK_BUILD_CA_BUNDLE:-${PIP_CERT:-/etc/ssl/certs/ca-certificates.crt}}
if [ -f "$CA_BUNDLE" ]; then
  BUILD_FLAGS+=(--volume "$CA_BUNDLE:/etc/ssl/certs/ca-certificates.crt:ro")
fi

step=""
detail=""
work=""
log() { printf '[images %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
fail() {
  local rc=$?
  printf '\n[images] FAILED at step: %s (exit %s)\n' "$step${detail:+ - $detail}" "$rc" >&2
  case "$step" in
    tools) printf '[images] needs podman, git, and for the base image debootstrap, tar and root\n' >&2 ;;
    mirror) printf '[images] no Debian %s mirror in /etc/apt/sources*; set LIMETASK_DEBIAN_MIRROR\n' "$SUITE" >&2 ;;
    "base: debootstrap") printf '[images] the Debian mirror failed or is unreachable; log: %s\n' "$LOGS/base.log" >&2 ;;
    base*) printf '[images] see the output above; log: %s\n' "$LOGS/base.log" >&2 ;;
    parent) printf '[images] build the project images first: make images (or make cluster-up) in %s\n' "$REPO" >&2 ;;
    build*) printf '[images] the podman build failed at the Dockerfile step named above; log: %s\n' \
                   "$LOGS/${step#build }.log" >&2
            printf '[images] (RUN steps need PyPI over the host network; runc and the ulimits in\n' >&2
            printf '[images] RUN_FLAGS are what works on hybrid-cgroup hosts)\n' >&2 ;;
    save*) printf '[images] podman save failed; is there room in %s?\n' "$OUT" >&2 ;;
  esac
  exit "$rc"
}
trap fail ERR
cleanup() {
  [ -n "$work" ] && [ -d "$work" ] || return 0
  # debootstrap mounts /proc and /sys in the target while it runs; never delete through a mount.
  awk -v w="$work/" 'index($2, w) == 1 { print $2 }' /proc/mounts | sort -r | xargs -r umount -l || true
  rm -rf "$work"
}
trap cleanup EXIT

# run_logged LABEL LOG CMD...: CMD with its output in LOG; every 20 s a line saying how far it is
# (podman's last STEP line, else the log's last line). On failure the log's tail is shown and
# `detail` names the Dockerfile step that failed.
where() {
  local at
  at=$(grep -E '(^|\] )STEP [0-9]+/[0-9]+: ' "$1" | tail -n 1 || true)
  [ -n "$at" ] || at=$(grep -v '^\s*$' "$1" | tail -n 1 || true)
  printf '%s' "${at:0:110}"
}
run_logged() {
  local label=$1 logfile=$2; shift 2
  local start=$SECONDS next=$((SECONDS + 20))
  "$@" >"$logfile" 2>&1 &
  local pid=$!
  while kill -0 "$pid" 2>/dev/null; do
    sleep 0.5
    if [ "$SECONDS" -ge "$next" ] && kill -0 "$pid" 2>/dev/null; then
      log "  ... $label, $((SECONDS - start))s: $(where "$logfile")"
      next=$((SECONDS + 20))
    fi
  done
  if ! wait "$pid"; then
    tail -n 30 "$logfile" >&2
    detail="at $(where "$logfile")"
    return 1
  fi
  log "  $label: $((SECONDS - start))s"
}

image_id() { "${PODMAN[@]}" image inspect --format '{{.Id}}' "$1" 2>/dev/null || true; }
image_key() { "${PODMAN[@]}" image inspect --format "{{index .Labels \"$KEY_LABEL\"}}" "$1" 2>/dev/null || true; }
mib() { echo "$(( ($1 + 524288) / 1048576 )) MiB"; }

# context_key PARENT_ID SETTINGS PATH...: a hash of what a build reads: its parent image, its
# settings, and the mode and content of every file git sees under PATHs (relative to REPO; none:
# the settings carry a digest of the files instead).
context_key() {
  local parent=$1 settings=$2; shift 2
  {
    printf 'parent %s\nsettings %s\nflags %s\n' "$parent" "$settings" "${BUILD_FLAGS[*]}"
    [ "$#" -gt 0 ] || return 0
    git -C "$REPO" ls-files -z --cached --others --exclude-standard -- "$@" | sort -zu |
      while IFS= read -r -d '' f; do
        [ -f "$REPO/$f" ] || continue   # tracked but deleted in the work tree
        printf '%s %s %s\n' "$(stat -c %a "$REPO/$f")" "$(sha256sum <"$REPO/$f" | cut -c1-64)" "$f"
      done
  } | sha256sum | cut -c1-32
}

# build_settings DOCKERFILE BUILD_ARG [DIGEST]: the settings part of an image's key.
build_settings() { printf '%s %s%s' "$1" "$2" "${3:+ content $3}"; }

# build [--digest DIGEST] NAME IMAGE CONTEXT DOCKERFILE PARENT_IMAGE BUILD_ARG PATH...: build
# IMAGE unless its key (see context_key; PATHs are relative to REPO, or none when DIGEST stands for
# the context's files) is the one the existing image carries. DOCKERFILE is relative to REPO or
# absolute; a DOCKERFILE.dockerignore beside it says what the context leaves out.
build() {
  local digest=""
  if [ "$1" = --digest ]; then digest=$2; shift 2; fi
  local name=$1 image=$2 context=$3 dockerfile=$4 parent=$5 arg=$6; shift 6
  step="build $name"
  detail=""
  local file=$dockerfile
  [[ $file = /* ]] || file="$REPO/$file"
  local ignore=()
  [ ! -f "$file.dockerignore" ] || ignore=(--ignorefile "$file.dockerignore")
  local parent_id; parent_id=$(image_id "$parent")
  [ -n "$parent_id" ] || { log "$parent is missing"; false; }
  local key; key=$(context_key "$parent_id" "$(build_settings "$dockerfile" "$arg" "$digest")" "$@")
  if [ "$(image_key "$image")" = "$key" ]; then
    log "  $image is up to date (key $key)"
    return 0
  fi
  local old; old=$(image_id "$image")
  log "  building $image (key $key; progress every 20 s; log $LOGS/$name.log)"
  run_logged "build $name" "$LOGS/$name.log" \
    "${PODMAN[@]}" build "${BUILD_FLAGS[@]}" "${ignore[@]}" --build-arg "$arg" --label "$KEY_LABEL=$key" \
    -f "$file" -t "$image" "$context"
  local new; new=$(image_id "$image")
  log "  $image: $(mib "$("${PODMAN[@]}" image inspect --format '{{.Size}}' "$image")")"
  # The image this one replaces, and the layers only it used; kept if anything still uses it.
  if [ -n "$old" ] && [ "$old" != "$new" ]; then
    "${PODMAN[@]}" rmi "$old" >/dev/null 2>&1 || true
  fi
}

# save NAME IMAGE: OUT/NAME.tar, a docker-archive of IMAGE, rewritten only when IMAGE changed.
save() {
  local name=$1 image=$2
  step="save $name"
  local id; id=$(image_id "$image")
  if [ -f "$OUT/$name.tar" ] && [ "$(cat "$OUT/$name.id" 2>/dev/null || true)" = "$id" ]; then
    log "  $name.tar is up to date"
    return 0
  fi
  rm -f "$OUT/$name.tar.tmp"
  run_logged "save $name.tar" "$LOGS/save-$name.log" \
    "${PODMAN[@]}" save --format docker-archive -o "$OUT/$name.tar.tmp" "$image"
  mv "$OUT/$name.tar.tmp" "$OUT/$name.tar"
  echo "$id" >"$OUT/$name.id"
  log "  $name.tar: $(mib "$(stat -c %s "$OUT/$name.tar")")"
}

# start TOOL...: the tools are there, the cache exists, and no other build runs (one podman
# storage, one cache: two builds at once would race for both).
start() {
  step=tools
  local t
  for t in "$@"; do
    command -v "$t" >/dev/null || { log "no $t on PATH"; false; }
  done
  mkdir -p "$IMAGES/tmp" "$LOGS" "$OUT"
  # podman's own temporary files (image copies, build scratch) go under the cache too.
  export TMPDIR="$IMAGES/tmp"
  exec 9>"$IMAGES/.lock"
  if ! flock -n 9; then
    log "another image build is running; waiting for it"
    flock 9
  fi
}
