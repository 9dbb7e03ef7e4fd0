#!/usr/bin/env bash
# Build the project's container images with podman, from a Python base image made here (no
# container registry is needed, only a Debian mirror and PyPI), and write each one as a
# docker-archive tarball that `ctr -n k8s.io images import FILE` loads into containerd.
#
#   devtools/images/build-images.sh            # tarballs into <cache>/images/out; prints that folder
#   devtools/images/build-images.sh OUT_DIR    # tarballs into OUT_DIR
#
# Images:
#   localhost/limetask/python-base:3.11-bookworm  debootstrap'd Debian bookworm, python3 and a venv
#                                                 at /usr/local/python (python, pip first on PATH)
#   localhost/limetask/runner:dev                 runner/Dockerfile, context: the repository root
#   localhost/limetask/operator:dev               operator/Dockerfile, context: the repository root
#   localhost/limetask/acme-runner:dev            examples/acme_solution/Dockerfile, FROM the runner
# OUT_DIR gets runner.tar, operator.tar, acme-runner.tar and images.txt ("FILE IMAGE" per line).
#
# Caching: the base is built once (its root filesystem is kept as <cache>/images/python-base-
# <suite>.tar.gz; remove it and the image to rebuild). An image is rebuilt only when its key
# changes: a hash of its parent image, its build arguments and every file git sees (tracked, or
# untracked and not ignored) under the paths its Dockerfile copies. A tarball is rewritten only
# when its image changed. So a second run with nothing changed takes seconds.
#
# Environment:
#   LIMETASK_CACHE            cache root (default: ${XDG_CACHE_HOME:-~/.cache}/limetask)
#   LIMETASK_DEBIAN_MIRROR    Debian mirror for debootstrap (default: the bookworm one in this
#                             machine's apt sources)
#   LIMETASK_BUILD_CA_BUNDLE  CA bundle pip trusts in RUN steps, mounted for the build only
#                             (default: $PIP_CERT, else /etc/ssl/certs/ca-certificates.crt)
#   LIMETASK_PODMAN_ROOT      if set, podman keeps its images in DIR/storage and DIR/run, not in
#                             the machine's podman storage (then give podman run or podman images
#                             the same --root/--runroot)
#
# Podman settings that work on hosts with hybrid (v1) cgroups and a tight RLIMIT ceiling: runc
# (crun fails there), explicit ulimits (podman's defaults fail with setrlimit EPERM), and the host
# network for RUN steps (pip needs PyPI). Making the base needs root (debootstrap, chroot).
#
# Every step says what it does, long ones show progress, and a failed step says which.
set -Eeuo pipefail

SUITE=bookworm
BASE_IMAGE=localhost/limetask/python-base:3.11-$SUITE
RUNNER_IMAGE=localhost/limetask/runner:dev
OPERATOR_IMAGE=localhost/limetask/operator:dev
ACME_IMAGE=localhost/limetask/acme-runner:dev
VENV=/usr/local/python
BASE_PATH=$VENV/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
KEY_LABEL=limetask.context-key
# What the runner and operator Dockerfiles copy from the repository root.
PROJECT_PATHS=(pyproject.toml README.md requirements lime_task operator/limetask_operator runner/limetask_runner)

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
CACHE=${LIMETASK_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/limetask}
IMAGES="$CACHE/images"
OUT=${1:-$IMAGES/out}
LOGS="$IMAGES/logs"
BASE_TAR="$IMAGES/python-base-$SUITE.tar.gz"

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
# settings, and the mode and content of every file git sees under PATHs (relative to REPO).
context_key() {
  local parent=$1 settings=$2; shift 2
  {
    printf 'parent %s\nsettings %s\nflags %s\n' "$parent" "$settings" "${BUILD_FLAGS[*]}"
    git -C "$REPO" ls-files -z --cached --others --exclude-standard -- "$@" | sort -zu |
      while IFS= read -r -d '' f; do
        [ -f "$REPO/$f" ] || continue   # tracked but deleted in the work tree
        printf '%s %s %s\n' "$(stat -c %a "$REPO/$f")" "$(sha256sum <"$REPO/$f" | cut -c1-64)" "$f"
      done
  } | sha256sum | cut -c1-32
}

# debian_mirror: the first URI this machine's apt uses for SUITE (deb822 or one-line sources).
debian_mirror() {
  local found="" f
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    found+=$(awk -v suite="$SUITE" '
      function flush() {
        if ((" " types " ") ~ / deb / && (" " suites " ") ~ (" " suite " ") && uris != "") {
          split(uris, u, " "); print u[1]; done = 1; exit
        }
        types = suites = uris = ""
      }
      /^[ \t]*#/ { next }
      /^[ \t]*$/ { flush(); next }
      tolower($1) == "types:"  { $1 = ""; types = $0 }
      tolower($1) == "uris:"   { $1 = ""; uris = $0 }
      tolower($1) == "suites:" { $1 = ""; suites = $0 }
      END { if (!done) flush() }' "$f")$'\n'
  done
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [ -f "$f" ] || continue
    found+=$(awk -v suite="$SUITE" '$1 == "deb" {
      i = 2; if ($2 ~ /^\[/) { while (i < NF && $i !~ /\]$/) i++; i++ }
      if ($(i + 1) == suite) { print $i; exit } }' "$f")$'\n'
  done
  found=$(printf '%s' "$found" | grep -m1 . || true)
  printf '%s' "$found"
}

step=tools
for t in podman git sha256sum flock; do
  command -v "$t" >/dev/null || { log "no $t on PATH"; false; }
done
mkdir -p "$IMAGES/tmp" "$LOGS" "$OUT"
# podman's own temporary files (image copies, build scratch) go under the cache too.
export TMPDIR="$IMAGES/tmp"
exec 9>"$IMAGES/.lock"
if ! flock -n 9; then
  log "another build-images.sh is running; waiting for it"
  flock 9
fi
log "repository $REPO, cache $IMAGES, output $OUT"

# ---------------------------------------------------------------------------------------------
step=base
if [ -n "$(image_id "$BASE_IMAGE")" ]; then
  log "step 1/4: base $BASE_IMAGE exists"
else
  if [ ! -f "$BASE_TAR" ]; then
    step=mirror
    mirror=${LIMETASK_DEBIAN_MIRROR:-$(debian_mirror)}
    [ -n "$mirror" ] || { log "no Debian $SUITE mirror found"; false; }
    step=tools
    [ "$(id -u)" = 0 ] || { log "making the base image needs root (debootstrap, chroot)"; false; }
    command -v debootstrap >/dev/null || { log "no debootstrap on PATH"; false; }

    step="base: debootstrap"
    log "step 1/4: base root filesystem: debootstrap $SUITE from $mirror (a minute or two)"
    work=$(mktemp -d "$IMAGES/tmp/base.XXXXXX")
    root="$work/rootfs"
    run_logged debootstrap "$LOGS/base.log" \
      debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
      "$SUITE" "$root" "$mirror"

    step="base: venv"
    log "  python and pip: a venv at $VENV with pip from ensurepip"
    chroot "$root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 \
      python3 -m venv "$VENV" >>"$LOGS/base.log" 2>&1 ||
      { tail -n 20 "$LOGS/base.log" >&2; false; }
    rm -f "$root$VENV"/bin/activate* "$root$VENV"/bin/Activate.ps1
    for t in groupadd useradd; do
      [ -x "$root/usr/sbin/$t" ] || { log "$t is missing from the base (passwd package)"; false; }
    done

    step="base: trim"
    # What a slim Debian image leaves out: apt's lists and caches, logs, docs (but copyrights),
    # man pages and translations; dpkg is told to skip them in derived images too.
    rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/* "$root"/var/cache/debconf/*-old \
           "$root"/usr/share/man/* "$root"/usr/share/info/* "$root"/usr/share/lintian/*
    find "$root/var/log" -type f -delete
    find "$root/usr/share/doc" -mindepth 1 -not -type d -not -name copyright -delete
    find "$root/usr/share/doc" -mindepth 1 -depth -type d -empty -delete
    find "$root/usr/share/locale" -mindepth 1 -maxdepth 1 -not -name locale.alias -exec rm -rf {} +
    cat >"$root/etc/dpkg/dpkg.cfg.d/limetask-slim" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/lintian/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
EOF
    # The build host's name and resolver are not the image's; podman provides both at run time.
    : >"$root/etc/resolv.conf"
    echo localhost >"$root/etc/hostname"

    step="base: tarball"
    tar --numeric-owner --exclude='./dev/*' --exclude='./proc/*' --exclude='./sys/*' \
      -C "$root" -czf "$BASE_TAR.tmp" .
    mv "$BASE_TAR.tmp" "$BASE_TAR"
    rm -rf "$work"
    work=""
    log "  root filesystem: $BASE_TAR ($(mib "$(stat -c %s "$BASE_TAR")"))"
  else
    log "step 1/4: base from the cached root filesystem $BASE_TAR"
  fi
  step="base: import"
  run_logged "import $BASE_IMAGE" "$LOGS/base-import.log" \
    "${PODMAN[@]}" import --change "ENV PATH=$BASE_PATH" --change 'ENV LANG=C.UTF-8' \
    --change 'CMD ["python3"]' "$BASE_TAR" "$BASE_IMAGE"
  log "  $BASE_IMAGE: $(mib "$("${PODMAN[@]}" image inspect --format '{{.Size}}' "$BASE_IMAGE")")"
fi

# ---------------------------------------------------------------------------------------------
# build NAME IMAGE CONTEXT DOCKERFILE PARENT_IMAGE BUILD_ARG PATH...: build IMAGE unless its key
# (see context_key; PATHs are relative to REPO) is the one the existing image carries.
build() {
  local name=$1 image=$2 context=$3 dockerfile=$4 parent=$5 arg=$6; shift 6
  step="build $name"
  detail=""
  local parent_id; parent_id=$(image_id "$parent")
  [ -n "$parent_id" ] || { log "$parent is missing"; false; }
  local key; key=$(context_key "$parent_id" "$dockerfile $arg" "$@")
  if [ "$(image_key "$image")" = "$key" ]; then
    log "  $image is up to date (key $key)"
    return 0
  fi
  local old; old=$(image_id "$image")
  log "  building $image (key $key; progress every 20 s; log $LOGS/$name.log)"
  run_logged "build $name" "$LOGS/$name.log" \
    "${PODMAN[@]}" build "${BUILD_FLAGS[@]}" --build-arg "$arg" --label "$KEY_LABEL=$key" \
    -f "$REPO/$dockerfile" -t "$image" "$context"
  local new; new=$(image_id "$image")
  log "  $image: $(mib "$("${PODMAN[@]}" image inspect --format '{{.Size}}' "$image")")"
  # The image this one replaces, and the layers only it used; kept if anything still uses it.
  if [ -n "$old" ] && [ "$old" != "$new" ]; then
    "${PODMAN[@]}" rmi "$old" >/dev/null 2>&1 || true
  fi
}

log "step 2/4: runner"
build runner "$RUNNER_IMAGE" "$REPO" runner/Dockerfile "$BASE_IMAGE" "BASE_IMAGE=$BASE_IMAGE" \
  runner/Dockerfile "${PROJECT_PATHS[@]}"
log "step 3/4: operator, acme-runner"
build operator "$OPERATOR_IMAGE" "$REPO" operator/Dockerfile "$BASE_IMAGE" "BASE_IMAGE=$BASE_IMAGE" \
  operator/Dockerfile "${PROJECT_PATHS[@]}"
build acme-runner "$ACME_IMAGE" "$REPO/examples/acme_solution" examples/acme_solution/Dockerfile \
  "$RUNNER_IMAGE" "RUNNER_IMAGE=$RUNNER_IMAGE" examples/acme_solution

# ---------------------------------------------------------------------------------------------
step=save
log "step 4/4: docker-archive tarballs in $OUT"
: >"$OUT/images.txt.tmp"
for pair in "runner $RUNNER_IMAGE" "operator $OPERATOR_IMAGE" "acme-runner $ACME_IMAGE"; do
  read -r name image <<<"$pair"
  step="save $name"
  id=$(image_id "$image")
  if [ -f "$OUT/$name.tar" ] && [ "$(cat "$OUT/$name.id" 2>/dev/null || true)" = "$id" ]; then
    log "  $name.tar is up to date"
  else
    rm -f "$OUT/$name.tar.tmp"
    run_logged "save $name.tar" "$LOGS/save-$name.log" \
      "${PODMAN[@]}" save --format docker-archive -o "$OUT/$name.tar.tmp" "$image"
    mv "$OUT/$name.tar.tmp" "$OUT/$name.tar"
    echo "$id" >"$OUT/$name.id"
    log "  $name.tar: $(mib "$(stat -c %s "$OUT/$name.tar")")"
  fi
  echo "$name.tar $image" >>"$OUT/images.txt.tmp"
done
mv "$OUT/images.txt.tmp" "$OUT/images.txt"

step=done
log "done: $OUT (import each with: ctr -n k8s.io images import FILE)"
echo "$OUT"
