"""The shipped packages stay typed (mypy --strict) and lint-clean (ruff)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *args], cwd=REPO, text=True, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT)


def test_mypy_strict() -> None:
    result = run("mypy")
    assert result.returncode == 0, result.stdout


def test_ruff() -> None:
    result = run("ruff", "check", "lime_task", "operator", "runner", "devtools", "tests", "bench", "examples")
    assert result.returncode == 0, result.stdout
