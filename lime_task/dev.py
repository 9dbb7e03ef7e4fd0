"""`limetask dev`: a solution's own tasks on the local cluster, in one command.

The solution is a package directory (pyproject.toml or setup.py) with the Dockerfile.tasks that
`limetask generate tasks` writes. Its runner image is built FROM the local runner image with the
project's own image tooling (devtools/images/build-solution.sh, which shares build-images.sh's
podman settings, cache and lock), loaded into the local cluster's node (devtools/cluster/
localcluster.py), and the operator runs here with that image as its runner image.

The image's tag comes from a digest of the solution's files: the files the build reads (what
Dockerfile.tasks.dockerignore leaves out is left out here too), so an unchanged solution is not
built again and a changed one gets a tag of its own (pods take the new code, never a stale image
under an old tag). The watch polls the same files' sizes and modification times.

The local cluster's tooling is in a limetask checkout, not in the installed package: the checkout
is LIMETASK_CHECKOUT, else the one this package was installed from (`make venv` installs it
editable). Its cluster state is LIMETASK_CLUSTER_DIR, else the checkout's .cluster/.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import IO

from .generate import PROJECT_FILES, distribution_name

DOCKERFILE = "Dockerfile.tasks"
IGNORE_FILE = DOCKERFILE + ".dockerignore"
DEFAULT_NAMESPACE = "limetask-dev"
EXAMPLE_APP = "my-app"
# The runner pods of a dev namespace meet the Pod Security Standard a platform's would.
RESTRICTED = {f"pod-security.kubernetes.io/{mode}": "restricted" for mode in ("enforce", "warn", "audit")}
# What kopf logs once it has logged in: from then on it handles LimeTasks.
OPERATOR_READY = "Initial authentication has finished"


class DevError(Exception):
    """Something `limetask dev` needs is missing: the message says what to do."""


@dataclass(frozen=True)
class Solution:
    """A solution package directory with a Dockerfile.tasks."""

    root: Path
    # The image's name (localhost/limetask/dev-NAME): the distribution's name, as a tag allows.
    name: str
    ignore: tuple[str, ...] = ()


def image_name(distribution: str) -> str:
    """A distribution's name as an image name allows it: lower case, [a-z0-9._-], starting with
    a letter or digit."""
    name = re.sub(r"[^a-z0-9._-]+", "-", distribution.lower()).strip("-._")
    return name or "solution"


def find_solution(path: str | Path = ".") -> Solution:
    root = Path(path).resolve()
    if not root.is_dir():
        raise DevError(f"{root} is not a folder: give the folder of your solution package (where pyproject.toml is)")
    if not any((root / f).is_file() for f in PROJECT_FILES):
        raise DevError(f"{root} is not a package directory: it has no pyproject.toml or setup.py. Run `limetask dev` "
                       f"in the folder of your solution package, or give it: limetask dev PATH")
    if not (root / DOCKERFILE).is_file():
        raise DevError(f"{root} has no {DOCKERFILE} (the solution's runner image): run `limetask generate tasks` "
                       f"there first")
    ignore_file = root / IGNORE_FILE
    patterns = parse_ignore(ignore_file.read_text(encoding="utf-8")) if ignore_file.is_file() else ()
    return Solution(root=root, name=image_name(distribution_name(root) or root.name), ignore=patterns)


# -- the solution's files: what the build reads, its digest, and the watch --------------------

def parse_ignore(text: str) -> tuple[str, ...]:
    """The patterns of a .dockerignore file (comments and blank lines dropped, `./` and `/` trimmed)."""
    patterns = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        body = line[1:].strip() if negated else line
        body = os.path.normpath(body).lstrip("/")
        body = "" if body == "." else body
        if body:
            patterns.append(("!" if negated else "") + body)
    return tuple(patterns)


@functools.lru_cache(maxsize=256)
def _pattern_re(pattern: str) -> re.Pattern[str]:
    """A .dockerignore pattern as a regular expression over a `/`-separated relative path:
    `**` any number of folders, `*` and `?` within one name."""
    out = []
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out) + r"\Z")


def is_ignored(relative: str, patterns: tuple[str, ...]) -> bool:
    """Whether the build context leaves `relative` out. As Docker's: a pattern that matches a
    folder leaves out everything in it, and the last matching pattern wins (`!` keeps)."""
    parts = relative.split("/")
    prefixes = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
    ignored = False
    for pattern in patterns:
        keep = pattern.startswith("!")
        regex = _pattern_re(pattern[1:] if keep else pattern)
        if any(regex.match(p) for p in prefixes):
            ignored = not keep
    return ignored


def solution_files(solution: Solution) -> list[str]:
    """The files of the build context, relative and sorted. Folders left out whole (.venv, .git)
    are not walked; a `!` pattern cannot bring back a file inside them (Docker's own
    documentation advises against relying on that)."""
    found: list[str] = []
    for folder, dirs, files in os.walk(solution.root):
        here = Path(folder).relative_to(solution.root).as_posix()
        prefix = "" if here == "." else here + "/"
        dirs[:] = sorted(d for d in dirs if not is_ignored(prefix + d, solution.ignore))
        found.extend(prefix + f for f in files if not is_ignored(prefix + f, solution.ignore))
    return sorted(found)


def digest(solution: Solution) -> str:
    """A hash of what the build reads: every file's path, mode and content (a symbolic link's
    target). The same solution gives the same digest wherever it is."""
    h = hashlib.sha256()
    for relative in solution_files(solution):
        path = solution.root / relative
        try:
            st = path.lstat()
            if stat.S_ISLNK(st.st_mode):
                content = hashlib.sha256(os.readlink(path).encode()).hexdigest()
            else:
                content = hashlib.sha256(path.read_bytes()).hexdigest()
        except OSError:
            continue  # removed while we read: the watch sees it on its next look
        h.update(f"{stat.S_IMODE(st.st_mode):o} {content} {relative}\n".encode())
    return h.hexdigest()[:32]


def snapshot(solution: Solution) -> dict[str, tuple[int, int]]:
    """Each file's modification time and size: what the watch compares."""
    seen = {}
    for relative in solution_files(solution):
        try:
            st = (solution.root / relative).lstat()
        except OSError:
            continue
        seen[relative] = (st.st_mtime_ns, st.st_size)
    return seen


@dataclass
class Watch:
    """Changes to the solution's files, debounced: poll() says what changed once the files have
    been still for `quiet` seconds (an editor's save, or a `git checkout`, is one change)."""

    solution: Solution
    quiet: float = 1.0
    clock: Callable[[], float] = time.monotonic
    last: dict[str, tuple[int, int]] = field(default_factory=dict)
    pending: set[str] = field(default_factory=set)
    changed_at: float = 0.0

    def __post_init__(self) -> None:
        self.last = snapshot(self.solution)

    def poll(self) -> list[str]:
        now = self.clock()
        current = snapshot(self.solution)
        changed = {p for p in current.keys() | self.last.keys() if current.get(p) != self.last.get(p)}
        self.last = current
        if changed:
            self.pending |= changed
            self.changed_at = now
            return []
        if self.pending and now - self.changed_at >= self.quiet:
            out = sorted(self.pending)
            self.pending.clear()
            return out
        return []


# -- the limetask checkout and its local cluster ----------------------------------------------

def find_checkout(environ: Mapping[str, str] = os.environ) -> Path:
    """The limetask checkout whose local cluster tooling `limetask dev` uses."""
    given = environ.get("LIMETASK_CHECKOUT")
    candidate = Path(given).resolve() if given else Path(__file__).resolve().parent.parent
    if (candidate / "devtools" / "cluster" / "localcluster.py").is_file():
        return candidate
    if given:
        raise DevError(f"LIMETASK_CHECKOUT={given} is not a limetask checkout (no devtools/cluster/localcluster.py)")
    raise DevError("limetask dev needs a limetask checkout, whose local cluster it uses: this limetask is installed "
                   "from a package. Set LIMETASK_CHECKOUT to the checkout (where `make cluster-up` runs), or use "
                   "the venv `make venv` made there")


def load_localcluster(checkout: Path) -> ModuleType:
    """devtools/cluster/localcluster.py of the checkout, imported by its path (it is no package)."""
    path = checkout / "devtools" / "cluster" / "localcluster.py"
    loaded = sys.modules.get("localcluster")
    if loaded is not None and Path(getattr(loaded, "__file__", "")).resolve() == path.resolve():
        return loaded
    spec = importlib.util.spec_from_file_location("localcluster", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def check_cluster(cluster: ModuleType, checkout: Path) -> Path:
    """The kubeconfig of the running local cluster (one with a real node, which runs images)."""
    state = cluster.STATE
    if not cluster.healthy(state):
        raise DevError(f"the local cluster is not running (state: {state}): start it with `make cluster-up` in "
                       f"{checkout} (or set LIMETASK_CLUSTER_DIR to the state folder of a running one)")
    if cluster.simulated(state):
        raise DevError(f"the local cluster at {state} has simulated nodes, which run no images: use one with a real "
                       f"node (`make cluster-up`)")
    return Path(cluster.kubeconfig_path(state))


def build_command(checkout: Path, solution: Solution, content: str) -> list[str]:
    return ["bash", str(checkout / "devtools" / "images" / "build-solution.sh"), str(solution.root), solution.name,
            content]


def build_image(checkout: Path, solution: Solution, content: str) -> tuple[Path, str]:
    """Build (or find up to date) the solution's image; its tarball and name. The build's progress
    goes to stderr as it happens."""
    try:
        out = subprocess.run(build_command(checkout, solution, content), check=True, stdout=subprocess.PIPE,
                             text=True).stdout
    except subprocess.CalledProcessError:
        raise DevError("building the solution's image failed (the step and its log are named above)") from None
    lines = out.strip().splitlines()
    tarball, _, image = (lines[-1] if lines else "").partition(" ")
    if not image:
        raise DevError(f"the image build said nothing of its image: {out.strip()[-200:]!r}")
    return Path(tarball), image


def load_image(cluster: ModuleType, tarball: Path, image: str) -> None:
    """Import the image into the node's containerd (under its name: pods find it there)."""
    cluster.import_image(cluster.STATE, tarball, image)


def drop_image(cluster: ModuleType, image: str) -> None:
    """Remove an earlier build from the node (the runner's layers stay: the next build shares them)."""
    cluster.ctr(cluster.STATE, "images", "rm", image, check=False)


def prepare_namespace(cluster: ModuleType, checkout: Path, kubeconfig: Path, namespace: str) -> None:
    """The CRDs (as `make demo` installs them) and a namespace that enforces Pod Security 'restricted'."""
    # kubectl's discovery cache may predate the CRD; these calls use one of their own.
    cache = tempfile.mkdtemp(prefix="limetask-dev-kubectl-")
    # The cluster's own kubectl (localcluster's kubectl_path() would run the binaries' build script).
    binary = Path(str(cluster.config(cluster.STATE)["bin_dir"])) / "kubectl"
    kubectl = [str(binary), f"--kubeconfig={kubeconfig}", f"--cache-dir={cache}"]
    try:
        for argv, stdin in (
            ([*kubectl, "apply", "-f", str(checkout / "crds")], None),
            ([*kubectl, "wait", "--for=condition=Established", "-f", str(checkout / "crds"), "--timeout=30s"], None),
            ([*kubectl, "apply", "-f", "-"], json.dumps({"apiVersion": "v1", "kind": "Namespace", "metadata": {
                "name": namespace, "labels": RESTRICTED}})),
        ):
            done = subprocess.run(argv, input=stdin, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            if done.returncode != 0:
                raise DevError(f"{' '.join(argv[3:5])} failed: {(done.stderr or done.stdout).strip()}")
    finally:
        shutil.rmtree(cache, ignore_errors=True)


# -- the operator -----------------------------------------------------------------------------

def require_operator() -> None:
    """The operator is importable here (before minutes of building, not after)."""
    if importlib.util.find_spec("limetask_operator") is None:
        raise DevError("the operator is not installed here: pip install 'limetask[operator]'")


def operator_command(image: str, kubeconfig: Path, namespace: str, python: str = sys.executable,
                     environ: Mapping[str, str] = os.environ) -> tuple[list[str], dict[str, str]]:
    """The operator as `make demo` runs it, on one namespace, with the solution's image as the
    runner image; no metrics port (a second operator on this machine would clash on it)."""
    env = {**environ, "LIMETASK_KUBECONFIG": str(kubeconfig), "LIMETASK_RUNNER_IMAGE": image,
           "LIMETASK_METRICS_PORT": "0", "PYTHONUNBUFFERED": "1"}
    return [python, "-m", "limetask_operator", "--namespace", namespace], env


@dataclass
class OperatorProcess:
    """The operator this command started, and only that one: stopped when the command ends."""

    argv: list[str]
    env: dict[str, str]
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        with open(self.log_path, "ab") as log:
            # A session of its own: Ctrl-C reaches this command, which stops the operator itself.
            self.proc = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT, env=self.env,
                                         start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise DevError(f"the operator exited at start (exit {self.proc.returncode}):\n{self.tail(offset)}")
            if OPERATOR_READY in self.tail(offset, lines=0):
                return
            time.sleep(0.2)
        raise DevError(f"the operator did not start within {timeout:.0f}s; its log: {self.log_path}")

    def tail(self, offset: int = 0, lines: int = 20) -> str:
        try:
            with open(self.log_path, "rb") as f:
                f.seek(offset)
                text = f.read().decode(errors="replace")
        except OSError:
            return ""
        return text if lines == 0 else "\n".join(text.splitlines()[-lines:])

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, grace: float = 15) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


# -- what to tell the developer ---------------------------------------------------------------

def example_task(solution: Solution) -> str | None:
    """The example task `limetask generate tasks` wrote, if it is still there."""
    for base in (solution.root, solution.root / "src"):
        if not base.is_dir():
            continue
        for module in sorted(base.glob("*/tasks/tasks.py")):
            try:
                text = module.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError):
                continue
            if re.search(r"^def refresh_company\(", text, re.MULTILINE):
                return f"{module.parent.parent.name}.tasks.tasks.refresh_company"
    return None


def how_to_send(solution: Solution, kubeconfig: Path, namespace: str) -> str:
    task = example_task(solution) or "your_package.tasks.tasks.your_task"
    where = f"--namespace {namespace} --kubeconfig {kubeconfig}"
    return "\n".join([
        "Send a task from another shell (--no-check: the task is looked up in the image, not here):",
        f"  limetask send {task} {EXAMPLE_APP} '[1001, [\"name\"]]' --wait --no-check {where}",
        f"or from Python, in {solution.root}:",
        f"  python -c 'from lime_task import configure, send_task; configure(kubeconfig=\"{kubeconfig}\", "
        f"namespace=\"{namespace}\"); print(send_task(\"{task}\", \"{EXAMPLE_APP}\", 1001, [\"name\"])"
        f".wait(timeout=300).result)'",
    ])


def say(message: str, stream: IO[str] | None = None) -> None:
    print(f"[dev {time.strftime('%H:%M:%S')}] {message}", file=stream or sys.stdout, flush=True)


def describe_changes(paths: list[str], shown: int = 3) -> str:
    more = f" (and {len(paths) - shown} more)" if len(paths) > shown else ""
    return ", ".join(paths[:shown]) + more


@dataclass
class DevLoop:
    """One solution on one local cluster: its image (built, loaded) and the operator that runs it.
    The collaborators come in explicitly; `operator` is None until `serve` starts it."""

    solution: Solution
    checkout: Path
    cluster: ModuleType
    kubeconfig: Path
    namespace: str = DEFAULT_NAMESPACE
    environ: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))
    content: str = ""
    image: str = ""
    operator: OperatorProcess | None = None

    def build(self) -> str:
        """Build the image of the solution's files as they are now and load it into the node."""
        started = time.monotonic()
        content = digest(self.solution)
        tarball, image = build_image(self.checkout, self.solution, content)
        load_image(self.cluster, tarball, image)
        self.content, self.image = content, image
        say(f"{image} built and loaded into the node in {time.monotonic() - started:.1f}s")
        return image

    def serve(self) -> None:
        """The CRD, the namespace, and the operator with the solution's image."""
        prepare_namespace(self.cluster, self.checkout, self.kubeconfig, self.namespace)
        argv, env = operator_command(self.image, self.kubeconfig, self.namespace, environ=self.environ)
        self.operator = OperatorProcess(argv, env, Path(self.cluster.STATE) / "logs" /
                                        f"dev-operator-{self.solution.name}.log")
        self.operator.start()
        say(f"operator running (pid {self.operator.pid}) on namespace {self.namespace} with runner image "
            f"{self.image} (log: {self.operator.log_path})")

    def rebuild(self, changed: list[str]) -> bool:
        """After a change: build again, and restart the operator with the new image. A change that
        leaves the files as they were, or a failed build, keeps the operator as it is."""
        if digest(self.solution) == self.content:
            say(f"changed: {describe_changes(changed)}; the files read the same: {self.image} kept")
            return False
        say(f"changed: {describe_changes(changed)}; rebuilding")
        started, before = time.monotonic(), self.image
        try:
            self.build()
        except DevError as exc:
            say(f"rebuild failed, the operator keeps {before}: {exc}")
            return False
        if self.operator is not None:
            self.operator.stop()
            self.operator.argv, self.operator.env = operator_command(self.image, self.kubeconfig, self.namespace,
                                                                     environ=self.environ)
            self.operator.start()
            say(f"rebuilt {self.image} in {time.monotonic() - started:.1f}s; operator restarted with it "
                f"(pid {self.operator.pid})")
        if before != self.image:
            # Only now: the operator that ran it may have created a Job with it until it stopped.
            drop_image(self.cluster, before)
        return True

    def check_operator(self) -> None:
        if self.operator is not None and not self.operator.running():
            code = self.operator.proc.returncode if self.operator.proc else "?"
            raise DevError(f"the operator stopped (exit {code}):\n{self.operator.tail()}")

    def stop(self) -> None:
        if self.operator is not None:
            self.operator.stop()
            say("operator stopped")


def run(path: str | Path, namespace: str = DEFAULT_NAMESPACE, watch: bool = False, build_only: bool = False,
        interval: float = 0.5, quiet: float = 1.0, environ: Mapping[str, str] = os.environ) -> str:
    """Build, load, run the operator; with `watch`, again on every change, until interrupted."""
    solution = find_solution(path)
    if not build_only:
        require_operator()
    checkout = find_checkout(environ)
    cluster = load_localcluster(checkout)
    loop = DevLoop(solution, checkout, cluster, check_cluster(cluster, checkout), namespace, environ)
    say(f"solution {solution.root} (image localhost/limetask/dev-{solution.name}), cluster {cluster.STATE}")
    image = loop.build()
    if build_only:
        print(image, flush=True)
        return image
    try:
        loop.serve()
        print(how_to_send(solution, loop.kubeconfig, namespace), flush=True)
        say("watching the solution's files; Ctrl-C stops" if watch else "Ctrl-C stops the operator")
        changes = Watch(solution, quiet=quiet) if watch else None
        while True:
            time.sleep(interval)
            loop.check_operator()
            changed = changes.poll() if changes is not None else []
            if changed:
                loop.rebuild(changed)
    finally:
        loop.stop()
