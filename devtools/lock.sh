#!/usr/bin/env bash
# `make lock`: resolve the Python dependencies again and write the lock, requirements/lock.txt, and
# the sets derived from it. Nothing else ever changes a version: `make venv`, the Dockerfiles and
# CI install these files with --require-hashes --no-deps, so they resolve nothing themselves.
#
#   devtools/lock.sh                    every package to its newest release that pyproject.toml allows
#   devtools/lock.sh cronsim kopf       only these (and what they need); every other pin stays
#   LIMETASK_LOCK_KEEP=1 devtools/lock.sh
#                                       no upgrade: only what pyproject.toml's changes require
#
# The lock is uv's `pip compile` (https://docs.astral.sh/uv/): one universal resolution for the
# supported Python (3.11 and later, every platform) of the package, every extra and the `build`
# and `lock` groups, with the sha256 of every file of every pinned release. The derived sets are
# compiled with the lock as constraints, so a package has the same version in all of them:
#   lock.txt         everything: the development venv (`make venv`)
#   runner.txt       the package and the tracing extra: runner/Dockerfile
#   operator.txt     the operator and tracing extras: operator/Dockerfile
#   web.txt          the cli and web extras: an endpoint image built FROM the runner image
#   build.txt        setuptools and wheel: building the project's wheel and its editable install
#   constraints.txt  lock.txt without hashes: what a solution image's own install is held to
# After it: `make test` (the venv is made again from the new lock) and commit requirements/.
set -euo pipefail
cd "$(dirname "$0")/.."
UV=${UV:-.venv/bin/uv}
OUT=requirements
[ -x "$UV" ] || { echo "[lock] $UV is missing: run make venv first" >&2; exit 2; }
mkdir -p "$OUT"

common=(--quiet --universal --python-version 3.11 --custom-compile-command "make lock")
upgrade=()
if [ "$#" -gt 0 ]; then
  for p in "$@"; do upgrade+=(--upgrade-package "$p"); done
  echo "[lock] upgrading: $*"
elif [ -z "${LIMETASK_LOCK_KEEP:-}" ]; then
  upgrade=(--upgrade)
  echo "[lock] upgrading every package to its newest release that pyproject.toml allows"
else
  echo "[lock] keeping every pin pyproject.toml still allows"
fi

old=$(mktemp)
trap 'rm -f "$old"' EXIT
[ -f "$OUT/lock.txt" ] && cp "$OUT/lock.txt" "$old"

echo "[lock] resolving $OUT/lock.txt"
"$UV" pip compile "${common[@]}" "${upgrade[@]}" --generate-hashes \
  --all-extras --group pyproject.toml:build --group pyproject.toml:lock \
  -o "$OUT/lock.txt" pyproject.toml

# derive NAME ARGS...: NAME.txt from pyproject.toml with ARGS, held to the lock's pins.
derive() {
  local name=$1; shift
  echo "[lock] deriving $OUT/$name.txt"
  "$UV" pip compile "${common[@]}" --generate-hashes -c "$OUT/lock.txt" "$@" -o "$OUT/$name.txt" pyproject.toml
}
# Both images carry OpenTelemetry (API, SDK, OTLP over HTTP: some 9 MiB), which stays idle
# until OTEL_* settings ask for it, so that tracing is a setting, not another image.
derive runner --extra tracing
derive operator --extra operator --extra tracing
derive web --extra cli --extra web
echo "[lock] deriving $OUT/build.txt"
"$UV" pip compile "${common[@]}" --generate-hashes -c "$OUT/lock.txt" --group pyproject.toml:build \
  -o "$OUT/build.txt"
echo "[lock] deriving $OUT/constraints.txt"
"$UV" pip compile "${common[@]}" --no-annotate -c "$OUT/lock.txt" \
  --all-extras --group pyproject.toml:build -o "$OUT/constraints.txt" pyproject.toml

# What changed, a line per package.
pins() { grep -E '^[A-Za-z0-9._-]+==' "$1" | sed -E 's/ .*//; s/==/ /' | sort -u; }
if [ -s "$old" ]; then
  changes=$(join -a1 -a2 -e '-' -o 0,1.2,2.2 <(pins "$old") <(pins "$OUT/lock.txt") | awk '$2 != $3 {
    print "  " $1 ": " ($2 == "-" ? "added " $3 : $3 == "-" ? "removed (was " $2 ")" : $2 " -> " $3) }')
  if [ -n "$changes" ]; then echo "[lock] changed:"; echo "$changes"; else echo "[lock] no version changed"; fi
fi
echo "[lock] done: run make test (the venv is made again from the new lock), then commit $OUT/"
