"""The dependency lock (requirements/, written by `make lock`): one set of versions, installed the
same way everywhere.

- The lock satisfies pyproject.toml, and every set derived from it (the runner's, the
  operator's, the endpoint's, the build's) names the lock's versions and hashes, and exactly the
  packages its extras need.
- The development venv is the lock: every locked package at its version, nothing else.
- No install path (the Makefile, CI, the devtools scripts, the Dockerfiles) can resolve a
  version by itself: each pip call installs a hashed set with --no-deps, or a local project with
  --no-deps and no build isolation.
- A newer release published after the lock is not picked up: the venv's own install command,
  offered a newer cronsim, still installs the locked one (and the old unlocked command takes it).
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
import tomllib
import zipfile
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import pytest
from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parent.parent
REQUIREMENTS = REPO / "requirements"
LOCK = REQUIREMENTS / "lock.txt"
# The sets derived from the lock, and the extras (or group) each one is.
DERIVED = {"runner.txt": (), "operator.txt": ("operator",), "web.txt": ("cli", "web")}
# What the venv holds besides the lock: the project and the example solution (editable) and the
# venv's own pip.
NOT_LOCKED = {"limetask", "acme-solution", "pip"}


@dataclass
class Pin:
    name: str
    version: str
    marker: Marker | None
    hashes: set[str] = field(default_factory=set)

    def applies(self) -> bool:
        return self.marker is None or self.marker.evaluate()


def read_pins(path: Path) -> dict[str, Pin]:
    """name -> Pin of a requirements file as `uv pip compile` writes it (backslash continuations,
    `--hash=` options, `# via` comments)."""
    text = re.sub(r"\\\n", " ", path.read_text())
    pins: dict[str, Pin] = {}
    for raw in text.splitlines():
        line = raw.split(" #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        hashes = set(re.findall(r"--hash=(sha256:[0-9a-f]{64})", line))
        spec = re.sub(r"\s*--hash=\S+", "", line).strip()
        requirement = Requirement(spec)
        pinned = [s for s in requirement.specifier if s.operator == "=="]
        assert len(pinned) == 1 and len(requirement.specifier) == 1, f"{path.name}: not an exact pin: {raw!r}"
        name = canonicalize_name(requirement.name)
        assert name not in pins, f"{path.name}: {name} twice"
        pins[name] = Pin(name, pinned[0].version, requirement.marker, hashes)
    assert pins, f"{path} names no package"
    return pins


def pyproject() -> dict:  # type: ignore[type-arg]
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def closure(requirements: list[str], extras: tuple[str, ...] = ()) -> set[str]:
    """The installed distributions these requirements need, transitively, on this machine."""
    seen: set[str] = set()
    todo = [(Requirement(r), extras) for r in requirements]
    while todo:
        requirement, active = todo.pop()
        env = [{"extra": e} for e in active] or [{"extra": ""}]
        if requirement.marker is not None and not any(requirement.marker.evaluate(e) for e in env):
            continue
        name = canonicalize_name(requirement.name)
        if name in seen:
            continue
        seen.add(name)
        dist = metadata.distribution(name)
        todo += [(Requirement(r), tuple(requirement.extras)) for r in dist.requires or []]
    return seen


def test_the_lock_satisfies_pyproject() -> None:
    """Every requirement of pyproject.toml (the package, each extra, each group) is met by the
    lock's version: a changed range without `make lock` fails here, not on a fresh machine."""
    lock = read_pins(LOCK)
    project = pyproject()
    wanted = list(project["project"]["dependencies"])
    for deps in project["project"]["optional-dependencies"].values():
        wanted += deps
    for deps in project["dependency-groups"].values():
        wanted += deps
    problems = []
    for spec in wanted:
        requirement = Requirement(spec)
        name = canonicalize_name(requirement.name)
        if name not in lock:
            problems.append(f"{spec}: not in the lock")
        elif not requirement.specifier.contains(lock[name].version, prereleases=True):
            problems.append(f"{spec}: the lock has {lock[name].version}")
    assert not problems, "run `make lock`: " + "; ".join(problems)
    # Hashes for every pin: pip's --require-hashes refuses a file without them.
    assert all(pin.hashes for pin in lock.values()), [p.name for p in lock.values() if not p.hashes]


@pytest.mark.parametrize("name", [*DERIVED, "build.txt", "constraints.txt"])
def test_derived_sets_name_the_locks_versions(name: str) -> None:
    lock = read_pins(LOCK)
    derived = read_pins(REQUIREMENTS / name)
    differ = {n: (p.version, lock[n].version if n in lock else None) for n, p in derived.items()
              if n not in lock or lock[n].version != p.version}
    assert not differ, f"{name} differs from the lock (derived, lock): {differ}; run `make lock`"
    if name != "constraints.txt":
        assert all(p.hashes and p.hashes <= lock[n].hashes for n, p in derived.items()), name


@pytest.mark.parametrize("name", list(DERIVED))
def test_derived_sets_hold_exactly_what_their_extras_need(name: str) -> None:
    """What an image installs is complete (nothing resolved at install time) and no more than its
    extras need, worked out from the venv's own metadata (no network)."""
    extras = DERIVED[name]
    needed = closure([f"limetask[{','.join(extras)}]" if extras else "limetask"]) - {"limetask"}
    listed = {n for n, pin in read_pins(REQUIREMENTS / name).items() if pin.applies()}
    assert needed == listed, (f"{name}: missing {sorted(needed - listed)}, "
                              f"not needed {sorted(listed - needed)}; run `make lock`")


def test_the_venv_is_the_lock() -> None:
    """The suite runs with exactly the locked versions (what the images run), and nothing else."""
    lock = {n: p for n, p in read_pins(LOCK).items() if p.applies()}
    installed = {canonicalize_name(d.metadata["Name"]): d.version for d in metadata.distributions()}
    wrong = {n: (p.version, installed.get(n)) for n, p in lock.items() if installed.get(n) != p.version}
    extra = sorted(set(installed) - set(lock) - NOT_LOCKED)
    assert not wrong, f"the venv differs from the lock (locked, installed): {wrong}; run `make venv`"
    assert not extra, f"the venv holds packages the lock does not name: {extra}; `rm -rf .venv && make venv`"


# --------------------------------------------------------------------------------------------
# Install paths
# --------------------------------------------------------------------------------------------

# Every file that installs Python packages, and the Dockerfile that a solution builds from the
# template (its own dependencies are its own; limetask's are held by constraints.txt).
INSTALLERS = [REPO / "Makefile", REPO / ".ci" / "run", REPO / "operator" / "Dockerfile",
              REPO / "runner" / "Dockerfile", REPO / "examples" / "acme_solution" / "Dockerfile",
              *sorted((REPO / "devtools").rglob("*.sh")), *sorted((REPO / "devtools").rglob("*.py")),
              *sorted((REPO / "bench").rglob("*.py"))]
PIP = re.compile(r"\bpip3?\s+(install|wheel|download)\b(.*)")


def pip_calls(path: Path) -> list[tuple[str, list[str]]]:
    """(verb, arguments) of each pip call in a file, continuation lines joined."""
    text = re.sub(r"\\\n", " ", path.read_text())
    calls = []
    for line in text.splitlines():
        if line.lstrip().startswith("#"):
            continue
        for part in re.split(r"&&|\|\||;", line):
            if match := PIP.search(part):
                calls.append((match.group(1), shlex.split(match.group(2).replace('"', ""))))
    return calls


def check_call(verb: str, args: list[str]) -> str | None:
    """Why this pip call could resolve a version the lock does not name, or None."""
    if verb == "download":
        return "pip download resolves"
    if "--no-deps" not in args:
        return "no --no-deps: pip would resolve the dependencies"
    if any(a in ("-U", "--upgrade") for a in args):
        return "--upgrade"
    files = [args[i + 1] for i, a in enumerate(args) if a in ("-r", "--requirement")]
    targets = [a for i, a in enumerate(args) if not a.startswith("-") and args[i - 1] not in
               ("-r", "--requirement", "-c", "--constraint", "--wheel-dir", "-w", "--report")]
    if files:
        if "--require-hashes" not in args:
            return "a requirements file without --require-hashes"
        if not all(re.search(r"(^|/)requirements/[a-z]+\.txt$", f) for f in files):
            return f"not one of the lock's files: {files}"
    for target in targets:
        local = target.startswith(("/", ".", "examples/")) or target.endswith(".whl") or target == "."
        if not local:
            return f"installs {target!r} from an index"
        if not target.endswith(".whl") and "--no-build-isolation" not in args:
            return f"builds {target!r} in build isolation (which fetches the newest setuptools)"
    if not files and not targets:
        return "installs nothing this test understands"
    return None


def test_no_install_path_resolves_a_version() -> None:
    found = {path: pip_calls(path) for path in INSTALLERS if path.exists()}
    # The three places that do install: the venv, and both images (the example solution too).
    assert all(found[REPO / p] for p in ("Makefile", "operator/Dockerfile", "runner/Dockerfile",
                                         "examples/acme_solution/Dockerfile")), found
    problems = [f"{path.relative_to(REPO)}: pip {verb} {' '.join(args)}: {why}"
                for path, calls in found.items() for verb, args in calls
                if (why := check_call(verb, args))]
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize(("verb", "args", "why"), [
    ("install", ["-e", ".[operator]"], "no --no-deps"),
    ("install", ["--no-deps", "cronsim==2.9"], "from an index"),
    ("install", ["--no-deps", "-r", "requirements/lock.txt"], "without --require-hashes"),
    ("install", ["--no-deps", "--require-hashes", "-r", "other.txt"], "not one of the lock's files"),
    ("install", ["--no-deps", "-e", "."], "build isolation"),
    ("install", ["-q", "--upgrade", "--no-deps", "pip"], "--upgrade"),
    ("download", ["kopf"], "resolves"),
])
def test_the_install_path_check_refuses(verb: str, args: list[str], why: str) -> None:
    """The check above catches each way an install could resolve (so that it can fail)."""
    problem = check_call(verb, args)
    assert problem is not None and why in problem, problem


# --------------------------------------------------------------------------------------------
# A newer release, published after the lock
# --------------------------------------------------------------------------------------------

def fake_wheel(folder: Path, name: str, version: str) -> Path:
    """A valid, empty wheel of NAME at VERSION: a release newer than any on the index."""
    dist = f"{name}-{version}"
    path = folder / f"{dist}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as whl:
        whl.writestr(f"{dist}.dist-info/METADATA", f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
        whl.writestr(f"{dist}.dist-info/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
                                                "Tag: py3-none-any\n")
        whl.writestr(f"{dist}.dist-info/RECORD", "")
    return path


def makefile_install_args() -> list[str]:
    """The arguments of the Makefile's pip call that installs the lock into the venv."""
    for verb, args in pip_calls(REPO / "Makefile"):
        if verb == "install" and "requirements/lock.txt" in args:
            return [a for a in args if a not in ("-q",)]
    raise AssertionError("the Makefile installs no requirements/lock.txt")


def resolved(args: list[str], tmp_path: Path, links: Path) -> dict[str, str]:
    """What pip would install with ARGS, offered LINKS besides the index (a dry run)."""
    report = tmp_path / "report.json"
    run = subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed",
                          "--quiet", "--report", str(report), "--find-links", str(links), *args],
                         cwd=REPO, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    return {canonicalize_name(i["metadata"]["name"]): i["metadata"]["version"]
            for i in json.loads(report.read_text())["install"]}


@pytest.mark.network
def test_a_newer_release_is_not_picked_up(tmp_path: Path) -> None:
    """Offered a cronsim newer than the lock's (as if published today), the venv's install
    command still installs the locked one; the unlocked command it replaced takes the new one."""
    links = tmp_path / "links"
    links.mkdir()
    fake_wheel(links, "cronsim", "99.0")
    locked = read_pins(LOCK)["cronsim"].version
    assert locked != "99.0"

    got = resolved(makefile_install_args(), tmp_path, links)
    assert got["cronsim"] == locked
    # Every package at the lock's version, whatever the index offers.
    lock = {n: p.version for n, p in read_pins(LOCK).items() if p.applies()}
    assert got == lock

    # The control: without the lock (what `make venv` ran before it), the newer release wins.
    assert resolved(["--no-deps", "cronsim>=2.6"], tmp_path, links)["cronsim"] == "99.0"


def test_the_readme_names_the_versions_the_build_uses() -> None:
    """README's table of versions says what the scripts decide (no rot when one moves)."""
    readme = (REPO / "README.md").read_text()
    table = readme[readme.index("## Dependencies and versions"):readme.index("## The local cluster")]
    build = (REPO / "devtools" / "cluster" / "build-kubernetes.sh").read_text()
    for variable in ("DEFAULT_K8S_VERSION", "ETCD_VERSION", "CONTAINERD_VERSION"):
        version = re.search(rf"^{variable}=(\S+)$", build, re.MULTILINE)
        assert version and version.group(1) in table, variable
    suite = re.search(r"^SUITE=(\S+)$", (REPO / "devtools" / "images" / "build-images.sh").read_text(), re.MULTILINE)
    assert suite and f"Debian {suite.group(1)}" in table
    vendored = REPO / "lime_task" / "server" / "dashboard" / "static" / "vendor"
    chartjs = (vendored / "chart.js-VERSION").read_text().split()[0]
    assert chartjs in table
    for dockerfile in ("operator/Dockerfile", "runner/Dockerfile"):
        base = re.search(r"^ARG BASE_IMAGE=(\S+)$", (REPO / dockerfile).read_text(), re.MULTILINE)
        assert base and base.group(1) in table, dockerfile
