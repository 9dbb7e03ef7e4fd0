"""devtools/images/build-solution.sh (what `limetask dev` builds with) against a stand-in for
podman that keeps its images as files: the settings build-images.sh uses, the tag from the
solution's digest and the runner image, no second build of the same content, and the old tag
pruned. The real build runs in tests/test_e2e_dev.py."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "devtools" / "images" / "build-solution.sh"
RUNNER = "localhost/limetask/runner:dev"

# Images are files named by their reference; a file holds "ID LABEL". Every call is logged.
FAKE_PODMAN = r"""#!/usr/bin/env bash
set -eu
state=$FAKE_PODMAN_STATE
echo "$*" >>"$state/calls"
file() { printf '%s/images/%s' "$state" "$(printf '%s' "$1" | tr '/:' '__')"; }
case "$1" in
  image)
    f=$(file "${@: -1}"); [ -f "$f" ] || exit 125
    read -r id label <"$f"
    case "$4" in *Labels*) echo "$label" ;; *Size*) echo 1048576 ;; *) echo "$id" ;; esac ;;
  build)
    label="" tag=""
    while [ $# -gt 0 ]; do
      case "$1" in --label) label=${2#*=}; shift ;; -t) tag=$2; shift ;; esac; shift
    done
    echo "sha256:$(printf '%s' "$label" | sha256sum | cut -c1-12) $label" >"$(file "$tag")" ;;
  save)
    printf 'archive of %s\n' "${@: -1}" >"$5" ;;
  images)
    ref=${5#reference=}
    for f in "$state"/images/*; do
      name=$(basename "$f")
      case "$name" in
        "$(printf '%s' "$ref" | tr '/:' '__')"_*) echo "$name" | sed 's/^\(.*\)_\([^_]*\)$/\1:\2/; s/_/\//g' ;;
      esac
    done ;;
  rmi)
    rm -f "$(file "$2")" ;;
esac
"""


@pytest.fixture
def podman(tmp_path: Path) -> dict[str, str]:
    bin_dir, state = tmp_path / "bin", tmp_path / "podman"
    bin_dir.mkdir()
    (state / "images").mkdir(parents=True)
    (bin_dir / "podman").write_text(FAKE_PODMAN)
    # Should the stand-in ever miss the base image, build-images.sh would make one: not here.
    (bin_dir / "debootstrap").write_text("#!/bin/sh\necho 'no debootstrap in this test' >&2\nexit 1\n")
    for tool in ("podman", "debootstrap"):
        (bin_dir / tool).chmod(0o755)
    set_runner(state, "sha256:runner1")
    return {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "FAKE_PODMAN_STATE": str(state),
            "LIMETASK_CACHE": str(tmp_path / "cache"), "LIMETASK_BUILD_CA_BUNDLE": "/nonexistent"}


def set_runner(state: Path, image_id: str | None) -> None:
    path = state / "images" / RUNNER.replace("/", "_").replace(":", "_")
    if image_id is None:
        path.unlink()
    else:
        path.write_text(f"{image_id} runner-key\n")


def solution(tmp_path: Path) -> Path:
    root = tmp_path / "proj"
    root.mkdir()
    (root / "Dockerfile.tasks").write_text("ARG RUNNER_IMAGE\nFROM ${RUNNER_IMAGE}\n")
    (root / "Dockerfile.tasks.dockerignore").write_text(".venv\n")
    return root


def build(env: dict[str, str], root: Path, digest: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(SCRIPT), str(root), "acme", digest, str(root.parent / "out")], env=env,
                          text=True, capture_output=True, timeout=60)


def builds(env: dict[str, str]) -> list[str]:
    return [c for c in Path(env["FAKE_PODMAN_STATE"], "calls").read_text().splitlines() if c.startswith("build ")]


def test_builds_from_the_runner_image_with_the_projects_settings(tmp_path: Path, podman: dict[str, str]) -> None:
    root = solution(tmp_path)
    done = build(podman, root, "a" * 32)
    assert done.returncode == 0, done.stderr
    tarball, image = done.stdout.splitlines()[-1].split(" ")
    assert re.fullmatch(r"localhost/limetask/dev-acme:[0-9a-f]{16}", image), image
    assert tarball == str(tmp_path / "out" / "dev-acme.tar")
    assert Path(tarball).read_text() == f"archive of {image}\n"
    [call] = builds(podman)
    # build-images.sh's own podman settings, the ignore file beside the Dockerfile, FROM the runner.
    assert call.startswith("build --runtime runc --ulimit nofile=1024:4096 --ulimit nproc=1024:4096 --network host "
                           "--pull=never --layers=false ")
    assert (f"--ignorefile {root}/Dockerfile.tasks.dockerignore --build-arg RUNNER_IMAGE={RUNNER} "
            f"--label limetask.context-key={image.rsplit(':', 1)[1]}") in call
    assert call.endswith(f"-f {root}/Dockerfile.tasks -t {image} {root}")
    assert "dev-acme" in done.stderr and "FROM localhost/limetask/runner:dev" in done.stderr


def test_the_same_content_is_not_built_again_and_a_change_replaces_it(tmp_path: Path,
                                                                     podman: dict[str, str]) -> None:
    root = solution(tmp_path)
    first = build(podman, root, "a" * 32).stdout.split()[-1]
    again = build(podman, root, "a" * 32)
    assert again.returncode == 0 and again.stdout.split()[-1] == first
    assert "is up to date" in again.stderr and len(builds(podman)) == 1
    changed = build(podman, root, "b" * 32)
    second = changed.stdout.split()[-1]
    assert changed.returncode == 0 and second != first and len(builds(podman)) == 2
    calls = Path(podman["FAKE_PODMAN_STATE"], "calls").read_text().splitlines()
    assert f"rmi {first}" in calls and f"rmi {second}" not in calls  # the older tag is pruned
    # A rebuilt runner image is a new tag for the same content.
    set_runner(Path(podman["FAKE_PODMAN_STATE"]), "sha256:runner2")
    rebuilt = build(podman, root, "b" * 32)
    assert rebuilt.returncode == 0 and rebuilt.stdout.split()[-1] not in (first, second)
    assert len(builds(podman)) == 3


def test_without_the_runner_image_it_says_to_build_the_projects_images(tmp_path: Path,
                                                                       podman: dict[str, str]) -> None:
    set_runner(Path(podman["FAKE_PODMAN_STATE"]), None)
    done = build(podman, solution(tmp_path), "a" * 32)
    assert done.returncode != 0 and done.stdout == ""
    assert "no localhost/limetask/runner:dev in podman's storage" in done.stderr
    assert f"make images (or make cluster-up) in {REPO}" in done.stderr
    assert builds(podman) == []


def test_the_projects_images_build_as_before(tmp_path: Path, podman: dict[str, str]) -> None:
    """build-images.sh, now on the functions it shares with build-solution.sh: the same builds."""
    state = Path(podman["FAKE_PODMAN_STATE"])
    set_runner(state, None)
    (state / "images" / "localhost_limetask_python-base_3.11-bookworm").write_text("sha256:base key\n")
    out = tmp_path / "out"
    done = subprocess.run(["bash", str(REPO / "devtools" / "images" / "build-images.sh"), str(out)], env=podman,
                          text=True, capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == str(out)
    names = [c.split(" -t ")[1].split(" ")[0] for c in builds(podman)]
    assert names == [RUNNER, "localhost/limetask/operator:dev", "localhost/limetask/acme-runner:dev"]
    assert all("--ignorefile" not in c for c in builds(podman))
    assert builds(podman)[0].endswith(f"-f {REPO}/runner/Dockerfile -t {RUNNER} {REPO}")
    assert (out / "images.txt").read_text().splitlines() == [
        f"runner.tar {RUNNER}", "operator.tar localhost/limetask/operator:dev",
        "acme-runner.tar localhost/limetask/acme-runner:dev"]
    assert (out / "runner.tar").read_text() == f"archive of {RUNNER}\n"
