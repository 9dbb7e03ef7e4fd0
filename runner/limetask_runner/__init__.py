"""The runner: what runs inside each task's Job container (`python -m limetask_runner`)."""

from .main import ENV, main, run

__all__ = ["ENV", "main", "run"]
