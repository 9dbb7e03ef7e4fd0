"""What the scenarios share to measure and to say what they measured: the log line, percentiles,
a process's CPU and memory, a free port, and the task that does nothing.

Below `python -m bench` and its scenarios alike, so that no scenario imports the runner back.
"""

from __future__ import annotations

import os
import socket
import sys
import time
from pathlib import Path

NOOP = "acme_solution.tasks.lime.noop"


def say(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


def proc_cpu(pid: int) -> float:
    """User and system CPU seconds of a process (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def proc_mb(pid: int, key: str = "VmRSS") -> float:
    """A memory figure of /proc/PID/status in MB (VmRSS: now; VmHWM: the peak RSS)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
