"""How many attempts of a task ended in each way that lets it run again.

Each way has its own budget, so that one never uses up another's: lost workers count against
`maxAttempts` (late acknowledgement), autoretries against the task's `max_retries`, attempts
whose worker never started against a bound of their own, and the OOMKilled attempts of a task
with `memoryOnOOM` against its number of sizes (each runs the next with more memory). The status
keeps a counter for each (`workersLost`, `retries`, `notStarted`, `oomKilled`), since its history
keeps only the last attempts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

# History outcomes (status.history[].outcome) of the attempts that run the task again.
WORKER_LOST = "WorkerLost"
RETRY = "Retry"
NOT_STARTED = "NotStarted"
OOM_KILLED = "OOMKilled"

Kind = Literal["lost", "retries", "not_started", "oom"]
COUNTERS: dict[Kind, str] = {"lost": "workersLost", "retries": "retries", "not_started": "notStarted",
                             "oom": "oomKilled"}
_OUTCOMES: dict[Kind, str] = {"lost": WORKER_LOST, "retries": RETRY, "not_started": NOT_STARTED, "oom": OOM_KILLED}
_WORDS: dict[Kind, tuple[str, str]] = {
    "lost": ("lost its worker", "lost their worker"),
    "retries": ("raised an exception autoretry_for names", "raised an exception autoretry_for names"),
    "not_started": ("never started its worker", "never started their worker"),
    "oom": ("was OOMKilled and ran again with more memory", "were OOMKilled and ran again with more memory"),
}


@dataclass(frozen=True)
class Tally:
    lost: int = 0
    retries: int = 0
    not_started: int = 0
    oom: int = 0

    @classmethod
    def of(cls, status: dict[str, Any]) -> "Tally":
        """The counts in a status: its counters, or (a status written before they existed) its history."""
        history = status.get("history")
        entries = [h for h in history if isinstance(h, dict)] if isinstance(history, list) else []

        def count(kind: Kind) -> int:
            value = status.get(COUNTERS[kind])
            if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
                return value
            return sum(1 for h in entries if h.get("outcome") == _OUTCOMES[kind])

        return cls(lost=count("lost"), retries=count("retries"), not_started=count("not_started"),
                   oom=count("oom"))

    def counters(self) -> dict[str, int]:
        """The status fields that keep the counts (oomKilled only once there is one: a task without
        memoryOnOOM never has one, and its status stays as it was)."""
        out = {COUNTERS["lost"]: self.lost, COUNTERS["retries"]: self.retries,
               COUNTERS["not_started"]: self.not_started}
        if self.oom:
            out[COUNTERS["oom"]] = self.oom
        return out

    def others(self, kind: Kind) -> list[str]:
        """The attempts of every kind but `kind`, in words ("2 lost their worker")."""
        counts: dict[Kind, int] = {"lost": self.lost, "retries": self.retries, "not_started": self.not_started,
                                   "oom": self.oom}
        return [f"{n} {_WORDS[k][n != 1]}" for k, n in counts.items() if k != kind and n]


def and_list(parts: list[str]) -> str:
    """"a", "a and b", "a, b and c"."""
    return parts[0] if len(parts) == 1 else f"{', '.join(parts[:-1])} and {parts[-1]}"
