#!/usr/bin/env bash
# Build a solution's runner image for `limetask dev`: the solution's Dockerfile.tasks FROM the
# local runner image (localhost/limetask/runner:dev, from build-images.sh), with the same podman
# settings, cache and lock, and write it as a docker-archive tarball for the node's containerd.
#
#   devtools/images/build-solution.sh SOLUTION_DIR NAME DIGEST [OUT_DIR]
#
# NAME names the image (localhost/limetask/dev-NAME); DIGEST is a hash of the solution's files
# (what `limetask dev` computes, leaving out what Dockerfile.tasks.dockerignore leaves out). The
# tag is the image's key: a hash of DIGEST, the runner image it builds FROM and the build
# settings, so a changed file or a rebuilt runner gives a new tag, and an unchanged solution is
# not built again. Older tags of the same name are removed from podman's storage.
#
# The last line printed is "TARBALL IMAGE" (OUT_DIR/dev-NAME.tar, default <cache>/images/dev).
# Environment: as build-images.sh (LIMETASK_CACHE, LIMETASK_BUILD_CA_BUNDLE, LIMETASK_PODMAN_ROOT).
set -Eeuo pipefail

if [ "$#" -lt 3 ] || [ "$#" -gt 4 ]; then
  echo "usage: $0 SOLUTION_DIR NAME DIGEST [OUT_DIR]" >&2
  exit 2
fi
SOLUTION=$(cd "$1" && pwd)
NAME=dev-$2
DIGEST=$3
[[ $NAME =~ ^[a-z0-9][a-z0-9._-]*$ ]] || { echo "NAME must be lower case letters, digits, '.', '_' or '-'" >&2; exit 2; }

# shellcheck source=build-common.sh
source "$(dirname "${BASH_SOURCE[0]}")/build-common.sh"
OUT=${4:-$IMAGES/dev}
DOCKERFILE="$SOLUTION/Dockerfile.tasks"
ARG="RUNNER_IMAGE=$RUNNER_IMAGE"

start podman sha256sum flock
[ -f "$DOCKERFILE" ] || { step="no $DOCKERFILE"; false; }

step=parent
parent_id=$(image_id "$RUNNER_IMAGE")
[ -n "$parent_id" ] || { log "no $RUNNER_IMAGE in podman's storage"; false; }
key=$(context_key "$parent_id" "$(build_settings "$DOCKERFILE" "$ARG" "$DIGEST")")
image="localhost/limetask/$NAME:${key:0:16}"

log "$SOLUTION: $image FROM $RUNNER_IMAGE"
build --digest "$DIGEST" "$NAME" "$image" "$SOLUTION" "$DOCKERFILE" "$RUNNER_IMAGE" "$ARG"
save "$NAME" "$image"

step=prune
"${PODMAN[@]}" images --format '{{.Repository}}:{{.Tag}}' --filter "reference=localhost/limetask/$NAME" |
  while read -r other; do
    [ "$other" = "$image" ] || "${PODMAN[@]}" rmi "$other" >/dev/null 2>&1 || true
  done

step=done
echo "$OUT/$NAME.tar $image"
