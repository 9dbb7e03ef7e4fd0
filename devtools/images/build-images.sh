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
OPERATOR_IMAGE=localhost/limetask/operator:dev
ACME_IMAGE=localhost/limetask/acme-runner:dev
VENV=/usr/local/python
BASE_PATH=$VENV/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
# What the runner and operator Dockerfiles copy from the repository root.
PROJECT_PATHS=(pyproject.toml README.md requirements lime_task operator/limetask_operator runner/limetask_runner)

# The podman settings, the cache, the lock, the keys, build and save: shared with build-solution.sh.
# shellcheck source=build-common.sh
source "$(dirname "${BASH_SOURCE[0]}")/build-common.sh"
OUT=${1:-$IMAGES/out}
BASE_TAR="$IMAGES/python-base-$SUITE.tar.gz"

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

start podman git sha256sum flock
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
  save "$name" "$image"
  echo "$name.tar $image" >>"$OUT/images.txt.tmp"
done
mv "$OUT/images.txt.tmp" "$OUT/images.txt"

step=done
log "done: $OUT (import each with: ctr -n k8s.io images import FILE)"
echo "$OUT"
