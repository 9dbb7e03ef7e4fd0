"""`limetask dev` without a cluster: finding the solution, its errors, the files its image is
built from and their digest (the image's tag), the watch's change detection, and the build and
operator commands it runs."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from typer.testing import CliRunner

from lime_task import dev
from lime_task.cli.app import app

REPO = Path(__file__).resolve().parents[2]


def make_solution(root: Path, dist: str = "My.Solution", generate: bool = True) -> Path:
    """A package directory, with what `limetask generate tasks` writes."""
    (root / "my_solution").mkdir(parents=True)
    (root / "my_solution" / "__init__.py").write_text('"""A solution package."""\n')
    (root / "pyproject.toml").write_text(f'[project]\nname = "{dist}"\nversion = "0.1.0"\n')
    if generate:
        result = CliRunner().invoke(app, ["generate", "tasks", "--directory", str(root)])
        assert result.exit_code == 0, result.output
    return root


def test_finds_the_solution_and_names_its_image(tmp_path: Path) -> None:
    root = make_solution(tmp_path / "proj")
    solution = dev.find_solution(root)
    assert solution.root == root.resolve()
    assert solution.name == "my.solution"  # the distribution's name, as an image name allows
    # The generated Dockerfile.tasks.dockerignore is what the build context and the digest leave out.
    assert {".git", ".venv", "**/__pycache__", "*.egg-info"} <= set(solution.ignore)


@pytest.mark.parametrize(("given", "expected"), [
    ("Acme CRM_Solution", "acme-crm_solution"), ("--x--", "x"), ("ÅÄÖ", "solution")])
def test_image_names(given: str, expected: str) -> None:
    assert dev.image_name(given) == expected


def test_no_package_directory_says_where_to_run(tmp_path: Path) -> None:
    with pytest.raises(dev.DevError, match="no pyproject.toml or setup.py.*limetask dev PATH"):
        dev.find_solution(tmp_path)


def test_no_dockerfile_says_to_generate_it(tmp_path: Path) -> None:
    root = make_solution(tmp_path / "proj", generate=False)
    with pytest.raises(dev.DevError, match=r"no Dockerfile.tasks .*run `limetask generate tasks`"):
        dev.find_solution(root)


def test_the_command_fails_in_one_line_without_a_solution(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["dev", str(tmp_path)])
    assert result.exit_code == 1
    assert result.output.startswith("error: ") and "limetask generate tasks" not in result.output
    root = make_solution(tmp_path / "proj", generate=False)
    result = CliRunner().invoke(app, ["dev", str(root)])
    assert result.exit_code == 1 and "run `limetask generate tasks` there first" in result.output


def test_the_generated_dockerfile_builds_from_the_runner_image_given(tmp_path: Path) -> None:
    """What build-solution.sh relies on: FROM the RUNNER_IMAGE build argument, the package
    installed held to the runner image's constraints, and the tasks module registered."""
    root = make_solution(tmp_path / "proj")
    lines = (root / "Dockerfile.tasks").read_text().splitlines()
    arg = next(i for i, line in enumerate(lines) if line.startswith("ARG RUNNER_IMAGE="))
    assert lines[arg + 1] == "FROM ${RUNNER_IMAGE}"
    assert "COPY . /tmp/My.Solution/" in lines
    assert any(line.startswith("RUN pip install -c /usr/local/share/limetask/requirements/constraints.txt "
                               "/tmp/My.Solution") for line in lines)
    assert "ENV LIMETASK_IMPORTS=my_solution.tasks.tasks" in lines
    assert "USER 10001:10001" in lines


@pytest.mark.parametrize(("path", "ignored"), [
    (".venv/lib/site.py", True), (".git/HEAD", True), ("my_solution/__pycache__/x.pyc", True),
    ("__pycache__/x.pyc", True), ("my_solution.egg-info/PKG-INFO", True),
    ("src/my_solution.egg-info/PKG-INFO", False),  # `*.egg-info` is the context's top level only
    ("my_solution/tasks/tasks.py", False), ("Dockerfile.tasks", False), ("venv.py", False),
])
def test_what_the_build_context_leaves_out(path: str, ignored: bool) -> None:
    patterns = dev.parse_ignore((REPO / "lime_task" / "templates" / "Dockerfile.tasks.dockerignore.tmpl").read_text())
    assert dev.is_ignored(path, patterns) is ignored


def test_ignore_patterns_last_match_wins() -> None:
    patterns = dev.parse_ignore("# comment\n\n./docs\n*.md\n!README.md\n/build/**\n")
    assert patterns == ("docs", "*.md", "!README.md", "build/**")
    assert dev.is_ignored("docs/index.txt", patterns)
    assert dev.is_ignored("CHANGES.md", patterns) and not dev.is_ignored("README.md", patterns)
    assert dev.is_ignored("build/lib/x.py", patterns) and not dev.is_ignored("builder.py", patterns)


def test_the_digest_is_of_the_files_the_build_reads(tmp_path: Path) -> None:
    root = make_solution(tmp_path / "a")
    solution = dev.find_solution(root)
    first = dev.digest(solution)
    assert len(first) == 32 and first == dev.digest(solution)
    # A copy elsewhere has the same digest: the tag depends on content, not on where it is.
    copy = tmp_path / "elsewhere" / "b"
    shutil.copytree(root, copy)
    assert dev.digest(dev.find_solution(copy)) == first
    # What the build leaves out changes nothing.
    (root / ".venv" / "lib").mkdir(parents=True)
    (root / ".venv" / "lib" / "x.py").write_text("x = 1\n")
    (root / "my_solution" / "__pycache__").mkdir()
    (root / "my_solution" / "__pycache__" / "y.pyc").write_bytes(b"\0")
    assert dev.digest(solution) == first
    # A task's code, a file's mode, a new file and the Dockerfile each change it.
    tasks = root / "my_solution" / "tasks" / "tasks.py"
    tasks.write_text(tasks.read_text() + "\n# changed\n")
    changed = dev.digest(solution)
    assert changed != first
    mode = tasks.stat().st_mode
    tasks.chmod(0o755)
    assert dev.digest(solution) not in (first, changed)
    tasks.chmod(mode)
    assert dev.digest(solution) == changed
    (root / "my_solution" / "helpers.py").write_text("")
    assert dev.digest(solution) != changed
    (root / "my_solution" / "helpers.py").unlink()
    dockerfile = root / "Dockerfile.tasks"
    dockerfile.write_text(dockerfile.read_text() + "ENV X=1\n")
    assert dev.digest(solution) != changed


def test_the_files_listed_are_the_context_not_the_venv(tmp_path: Path) -> None:
    root = make_solution(tmp_path / "proj")
    (root / ".venv" / "bin").mkdir(parents=True)
    (root / ".venv" / "bin" / "python").write_text("")
    assert dev.solution_files(dev.find_solution(root)) == [
        "Dockerfile.tasks", "Dockerfile.tasks.dockerignore", "my_solution/__init__.py",
        "my_solution/tasks/__init__.py", "my_solution/tasks/endpoints.py", "my_solution/tasks/tasks.py",
        "my_solution/tasks/test_tasks.py", "pyproject.toml"]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def touch(path: Path, text: str, mtime: int) -> None:
    path.write_text(text)
    os.utime(path, ns=(mtime, mtime))


def test_the_watch_reports_a_change_once_the_files_are_still(tmp_path: Path) -> None:
    root = make_solution(tmp_path / "proj")
    clock = Clock()
    watch = dev.Watch(dev.find_solution(root), quiet=1.0, clock=clock)
    assert watch.poll() == []
    tasks = root / "my_solution" / "tasks" / "tasks.py"
    touch(tasks, tasks.read_text() + "# 1\n", 2_000_000_000_000_000_000)
    assert watch.poll() == []  # just changed: maybe more is coming
    clock.now += 0.6
    touch(tasks, tasks.read_text() + "# 2\n", 2_000_000_001_000_000_000)  # a second save, within the quiet time
    (root / "my_solution" / "new.py").write_text("")
    assert watch.poll() == []
    clock.now += 0.9
    assert watch.poll() == []  # 0.9 s since the last change
    clock.now += 0.2
    assert watch.poll() == ["my_solution/new.py", "my_solution/tasks/tasks.py"]  # one rebuild for both
    clock.now += 5
    assert watch.poll() == []  # reported once


def test_the_watch_sees_removals_and_ignores_what_the_build_leaves_out(tmp_path: Path) -> None:
    root = make_solution(tmp_path / "proj")
    clock = Clock()
    watch = dev.Watch(dev.find_solution(root), quiet=0.5, clock=clock)
    (root / "my_solution" / "__pycache__").mkdir()
    (root / "my_solution" / "__pycache__" / "tasks.cpython-311.pyc").write_bytes(b"\0")
    (root / ".venv").mkdir()
    (root / ".venv" / "pyvenv.cfg").write_text("")
    assert watch.poll() == []
    clock.now += 10
    assert watch.poll() == []
    (root / "my_solution" / "tasks" / "endpoints.py").unlink()
    assert watch.poll() == []
    clock.now += 0.5
    assert watch.poll() == ["my_solution/tasks/endpoints.py"]


def test_the_operator_runs_with_the_solutions_image(tmp_path: Path) -> None:
    argv, env = dev.operator_command("localhost/limetask/dev-acme:0123456789abcdef", tmp_path / "kubeconfig",
                                     "limetask-dev", python="/venv/bin/python",
                                     environ={"PATH": "/usr/bin", "LIMETASK_RUNNER_IMAGE": "elsewhere:1"})
    assert argv == ["/venv/bin/python", "-m", "limetask_operator", "--namespace", "limetask-dev"]
    assert env == {"PATH": "/usr/bin", "LIMETASK_RUNNER_IMAGE": "localhost/limetask/dev-acme:0123456789abcdef",
                   "LIMETASK_KUBECONFIG": str(tmp_path / "kubeconfig"), "LIMETASK_METRICS_PORT": "0",
                   "PYTHONUNBUFFERED": "1"}


def test_the_image_is_built_by_the_projects_image_tooling(tmp_path: Path) -> None:
    solution = dev.find_solution(make_solution(tmp_path / "proj"))
    assert dev.build_command(REPO, solution, "d" * 32) == [
        "bash", str(REPO / "devtools" / "images" / "build-solution.sh"), str(solution.root), "my.solution", "d" * 32]
    assert (REPO / "devtools" / "images" / "build-solution.sh").is_file()


def test_the_checkout_is_the_one_installed_from_or_the_one_given(tmp_path: Path) -> None:
    assert dev.find_checkout({}) == REPO  # `make venv` installs limetask editable from the checkout
    assert dev.find_checkout({"LIMETASK_CHECKOUT": str(REPO)}) == REPO
    with pytest.raises(dev.DevError, match="is not a limetask checkout"):
        dev.find_checkout({"LIMETASK_CHECKOUT": str(tmp_path)})


def test_the_local_cluster_module_is_the_checkouts() -> None:
    cluster = dev.load_localcluster(REPO)
    assert Path(cluster.__file__).resolve() == REPO / "devtools" / "cluster" / "localcluster.py"
    assert callable(cluster.import_image) and callable(cluster.healthy)


def test_a_cluster_that_is_down_says_to_start_it(tmp_path: Path) -> None:
    down = SimpleNamespace(STATE=tmp_path / ".cluster", healthy=lambda state: False, simulated=lambda state: False,
                           kubeconfig_path=lambda state: state / "kubeconfig")
    said = f"not running \\(state: {tmp_path}/.cluster\\).*`make cluster-up` in {REPO}"
    with pytest.raises(dev.DevError, match=said):
        dev.check_cluster(down, REPO)  # type: ignore[arg-type]
    simulated = SimpleNamespace(**{**vars(down), "healthy": lambda state: True, "simulated": lambda state: True})
    with pytest.raises(dev.DevError, match="simulated nodes, which run no images"):
        dev.check_cluster(simulated, REPO)  # type: ignore[arg-type]
    up = SimpleNamespace(**{**vars(down), "healthy": lambda state: True})
    assert dev.check_cluster(up, REPO) == tmp_path / ".cluster" / "kubeconfig"  # type: ignore[arg-type]


def test_it_says_how_to_send_the_generated_task(tmp_path: Path) -> None:
    solution = dev.find_solution(make_solution(tmp_path / "proj"))
    text = dev.how_to_send(solution, Path("/state/kubeconfig"), "limetask-dev")
    assert ("limetask send my_solution.tasks.tasks.refresh_company my-app '[1001, [\"name\"]]' --wait "
            "--no-check --namespace limetask-dev --kubeconfig /state/kubeconfig") in text
    one_liner = next(line.strip() for line in text.splitlines() if line.strip().startswith("python -c"))
    assert 'send_task("my_solution.tasks.tasks.refresh_company", "my-app", 1001, ["name"])' in one_liner
    assert compile(one_liner.removeprefix("python -c '").removesuffix("'"), "<one-liner>", "exec")


def test_a_solution_without_the_example_gets_a_placeholder(tmp_path: Path) -> None:
    root = make_solution(tmp_path / "proj")
    (root / "my_solution" / "tasks" / "tasks.py").write_text("")
    assert dev.example_task(dev.find_solution(root)) is None
    assert "your_package.tasks.tasks.your_task" in dev.how_to_send(dev.find_solution(root), Path("k"), "ns")


def test_the_operator_process_reports_an_early_exit(tmp_path: Path) -> None:
    operator = dev.OperatorProcess([sys.executable, "-c", "print('no kubeconfig'); raise SystemExit(3)"],
                                   dict(os.environ), tmp_path / "logs" / "op.log")
    with pytest.raises(dev.DevError, match="exited at start \\(exit 3\\):\nno kubeconfig"):
        operator.start(timeout=30)
    assert not operator.running()


def test_the_operator_process_is_stopped(tmp_path: Path) -> None:
    script = f"print({dev.OPERATOR_READY!r}, flush=True); import time; time.sleep(60)"
    operator = dev.OperatorProcess([sys.executable, "-c", script], dict(os.environ), tmp_path / "op.log")
    operator.start(timeout=30)
    assert operator.running()
    operator.stop(grace=5)
    assert not operator.running() and operator.proc is not None and operator.proc.returncode == -15


class FakeOperator:
    """Stands in for OperatorProcess: records when it is stopped and started, and with what."""

    def __init__(self, events: list[tuple[str, ...]]) -> None:
        self.events, self.argv, self.env, self.pid = events, ["op"], {"LIMETASK_RUNNER_IMAGE": "?"}, 1

    def start(self) -> None:
        self.events.append(("start operator", self.env["LIMETASK_RUNNER_IMAGE"]))

    def stop(self) -> None:
        self.events.append(("stop operator",))


def dev_loop(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
             fail_builds: bool = False) -> tuple[dev.DevLoop, list[tuple[str, ...]]]:
    """A DevLoop on a generated solution, its image builds and the node's containerd recorded."""
    events: list[tuple[str, ...]] = []

    def build_image(checkout: Path, solution: dev.Solution, content: str) -> tuple[Path, str]:
        events.append(("build", content))
        if fail_builds and len(events) > 1:
            raise dev.DevError("building the solution's image failed")
        return tmp_path / "dev-my.solution.tar", f"localhost/limetask/dev-my.solution:{content[:16]}"

    monkeypatch.setattr(dev, "build_image", build_image)
    cluster = SimpleNamespace(
        STATE=tmp_path / ".cluster",
        import_image=lambda state, tarball, image: events.append(("load", image)),
        ctr=lambda state, *args, check=True: events.append(("ctr", *args)))
    loop = dev.DevLoop(dev.find_solution(make_solution(tmp_path / "proj")), REPO, cluster,  # type: ignore[arg-type]
                       tmp_path / "kubeconfig", "limetask-dev", {})
    loop.build()
    loop.operator = FakeOperator(events)  # type: ignore[assignment]
    return loop, events


def test_a_rebuild_restarts_the_operator_with_the_new_image_then_drops_the_old(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    loop, events = dev_loop(tmp_path, monkeypatch)
    first = loop.image
    assert events == [("build", loop.content), ("load", first)]
    tasks = loop.solution.root / "my_solution" / "tasks" / "tasks.py"
    tasks.write_text(tasks.read_text().replace("refreshed", "renewed"))
    assert loop.rebuild(["my_solution/tasks/tasks.py"]) is True
    second = loop.image
    assert second != first and loop.content == dev.digest(loop.solution)
    assert events[2:] == [("build", loop.content), ("load", second), ("stop operator",),
                          ("start operator", second), ("ctr", "images", "rm", first)]


def test_a_change_that_leaves_the_files_as_they_were_builds_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    loop, events = dev_loop(tmp_path, monkeypatch)
    tasks = loop.solution.root / "my_solution" / "tasks" / "tasks.py"
    tasks.write_text(tasks.read_text())  # saved again, unchanged
    before = list(events)
    assert loop.rebuild(["my_solution/tasks/tasks.py"]) is False
    assert events == before


def test_a_failed_rebuild_keeps_the_operator_and_its_image(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    loop, events = dev_loop(tmp_path, monkeypatch, fail_builds=True)
    first, content = loop.image, loop.content
    (loop.solution.root / "my_solution" / "broken.py").write_text("def (")
    assert loop.rebuild(["my_solution/broken.py"]) is False
    assert (loop.image, loop.content) == (first, content)
    assert events[2:] == [("build", dev.digest(loop.solution))]  # no load, no restart, nothing dropped


def test_without_the_operator_it_fails_before_building(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = make_solution(tmp_path / "proj")
    real = dev.importlib.util.find_spec
    monkeypatch.setattr(dev.importlib.util, "find_spec",
                        lambda name, *a: None if name == "limetask_operator" else real(name, *a))
    monkeypatch.setattr(dev, "find_checkout", lambda environ: pytest.fail("looked for the cluster"))
    with pytest.raises(dev.DevError, match=r"pip install 'limetask\[operator\]'"):
        dev.run(root)
