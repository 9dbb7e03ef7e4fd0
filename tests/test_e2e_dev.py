"""End to end: `limetask dev --watch` on a solution that `limetask generate tasks` made, on the
local cluster: its image is built FROM the local runner image and loaded into the node, the
operator runs the generated task in it, a change to the task is rebuilt and runs, and Ctrl-C
stops the operator it started.

The image's RUN step installs the solution with pip, whose build isolation fetches setuptools
from the package index (hence the `network` mark too)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from conftest import Cluster, Operator, localcluster, wait_until

from lime_task import SUCCESS, TaskClient

pytestmark = [pytest.mark.e2e, pytest.mark.network]

LIMETASK = Path(sys.executable).parent / "limetask"
TASK = "e2e_dev_solution.tasks.tasks.refresh_company"
# The first build installs the solution in a fresh image (pip fetches setuptools): minutes on 2 busy cores.
BUILD_TIMEOUT = 600


class Output:
    """A process's output lines, read as they come."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.lines: list[str] = []
        self.thread = threading.Thread(target=self._read, args=(proc,), daemon=True)
        self.thread.start()

    def _read(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def find(self, pattern: str, start: int = 0) -> re.Match[str] | None:
        for line in self.lines[start:]:
            if match := re.search(pattern, line):
                return match
        return None

    def text(self) -> str:
        return "\n".join(self.lines[-60:])


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # reaped by nobody yet (our child's child is not ours to reap): a zombie is not running
        return not Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1].startswith("Z")
    except (OSError, IndexError):
        return False


@pytest.mark.timeout(3 * BUILD_TIMEOUT)
def test_dev_runs_a_generated_solution_and_rebuilds_on_change(local: Cluster, crd: None, operator: Operator,
                                                               namespace: str, tmp_path: Path) -> None:
    # The session's operator watches every namespace, with the example solution's image: it would
    # race the one `limetask dev` starts for this namespace's tasks. It is stopped meanwhile.
    operator.stop()
    try:
        run_dev(local, namespace, tmp_path)
    finally:
        operator.start()


def run_dev(local: Cluster, namespace: str, tmp_path: Path) -> None:
    root = tmp_path / "e2e-dev-solution"
    (root / "e2e_dev_solution").mkdir(parents=True)
    (root / "e2e_dev_solution" / "__init__.py").write_text('"""A solution package."""\n')
    (root / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["setuptools>=68"]\nbuild-backend = "setuptools.build_meta"\n\n'
        '[project]\nname = "e2e-dev-solution"\nversion = "0.1.0"\n')
    generated = subprocess.run([str(LIMETASK), "generate", "tasks", "-C", str(root)], text=True,
                               capture_output=True, timeout=60)
    assert generated.returncode == 0, generated.stderr
    assert (root / "Dockerfile.tasks").is_file()

    env = {**os.environ, "LIMETASK_CLUSTER_DIR": str(localcluster.STATE)}
    proc = subprocess.Popen([str(LIMETASK), "dev", str(root), "--namespace", namespace, "--watch", "--quiet", "0.5"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    out = Output(proc)
    operators: list[int] = []
    try:
        running = wait_until(lambda: out.find(r"operator running \(pid (\d+)\)") or proc.poll() is not None,
                             timeout=BUILD_TIMEOUT, interval=1, message="the image and the operator")
        assert proc.poll() is None, out.text()
        operators.append(int(running.group(1)))
        image = out.find(r"(localhost/limetask/dev-e2e-dev-solution:[0-9a-f]{16}) built and loaded").group(1)
        # The image is in the node's containerd; the way to send a task was printed.
        assert image in localcluster.ctr(localcluster.STATE, "images", "ls", "-q").stdout.split()
        assert out.find(re.escape(f"limetask send {TASK} my-app '[1001, [\"name\"]]' --wait --no-check "
                                  f"--namespace {namespace} --kubeconfig {local.kubeconfig}"))

        tasks = TaskClient(kubeconfig=local.kubeconfig, namespace=namespace)
        status = tasks.send(TASK, "my-app", [1001, ["phone", "name"]], check=False)
        final = tasks.wait(status.id, "my-app", timeout=180)
        assert final.status == SUCCESS, (final, out.text())
        assert final.result == "company 1001 of my-app: refreshed name, phone"

        # A change to the task: one rebuild, a new tag, the operator restarted with it.
        mark = len(out.lines)
        module = root / "e2e_dev_solution" / "tasks" / "tasks.py"
        module.write_text(module.read_text().replace("refreshed {", "renewed {"))
        rebuilt = wait_until(lambda: out.find(r"rebuilt (\S+) in .*operator restarted with it \(pid (\d+)\)", mark)
                             or proc.poll() is not None, timeout=BUILD_TIMEOUT, interval=1, message="the rebuild")
        assert proc.poll() is None, out.text()
        assert out.find(r"changed: e2e_dev_solution/tasks/tasks.py; rebuilding", mark)
        new_image, new_operator = rebuilt.group(1), int(rebuilt.group(2))
        operators.append(new_operator)
        assert new_image != image and new_image.startswith("localhost/limetask/dev-e2e-dev-solution:")
        assert not alive(operators[0]) and alive(new_operator)
        final = tasks.wait(tasks.send(TASK, "my-app", [7, ["name"]], check=False).id, "my-app", timeout=180)
        assert final.status == SUCCESS and final.result == "company 7 of my-app: renewed name", (final, out.text())

        # Ctrl-C: the operator it started stops, and so does the command, with exit 0.
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 0, out.text()
        out.thread.join(timeout=10)
        assert out.find(r"operator stopped")
        assert not alive(new_operator)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for pid in operators:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
