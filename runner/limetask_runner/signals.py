"""What the runner does on SIGTERM. Imports nothing heavy: `python -m limetask_runner` sets it
up before anything else is imported, so no moment of a container's life ignores the signal."""

from __future__ import annotations

import os
import signal
import sys


def die_on_sigterm() -> None:
    """End at once on SIGTERM, with no verdict, as any process does by default.

    In a container the runner is process 1, and the kernel ignores a signal that process 1 has
    no handler for: SIGTERM, which the kubelet sends when the pod is deleted (a cancel, a
    timeout, an eviction), would do nothing, and the task would run on until the grace period
    ends in SIGKILL. This handler restores the default: the process ends with the status a
    SIGTERM gives (128 + 15), before anything else runs, so neither the task nor the runner can
    take the signal for a verdict of its own."""
    def handler(signum: int, frame: object) -> None:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        os._exit(128 + signum)

    signal.signal(signal.SIGTERM, handler)
