"""The soak's faults: the leader killed, the archive or the broker away, the API server restarted.

The archive and the broker are reached by the operator through TCP proxies of the soak's own
(tests/tcpproxy.py): by default an outage cuts the proxy (the service looks gone to the operator,
while other users of the same server are left alone). With `real=True`, the service itself is
stopped and started again (RabbitMQ's application, PostgreSQL's Debian cluster): for a machine
that runs nothing else.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

KINDS = ("leader", "postgres", "rabbitmq", "apiserver")


class Switch(Protocol):
    def enable(self) -> None: ...

    def disable(self) -> None: ...


@dataclass
class FaultRecord:
    kind: str
    start: float  # monotonic
    restored: float | None = None  # the service back (the leader: the killed replica started again)
    detail: dict[str, Any] = field(default_factory=dict)


class ServiceSwitch:
    """A real service stopped and started by its own commands."""

    def __init__(self, stop: list[str], start: list[str]) -> None:
        self.stop_cmd, self.start_cmd = stop, start

    def disable(self) -> None:
        subprocess.run(self.stop_cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=120)

    def enable(self) -> None:
        subprocess.run(self.start_cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=120)


def rabbitmq_switch() -> ServiceSwitch:
    return ServiceSwitch(["rabbitmqctl", "-q", "stop_app"], ["rabbitmqctl", "-q", "start_app"])


def postgres_switch() -> ServiceSwitch:
    listing = subprocess.run(["pg_lsclusters", "-h"], check=True, stdout=subprocess.PIPE, text=True).stdout
    version, name = next(line.split()[:2] for line in listing.splitlines() if " 5432 " in f" {line} ")
    ctl = ["pg_ctlcluster", "--skip-systemctl-redirect", version, name]
    return ServiceSwitch([*ctl, "stop", "-m", "fast"], [*ctl, "start"])


async def outage(kind: str, switch: Switch, seconds: float) -> FaultRecord:
    """The service away for `seconds`, then back."""
    record = FaultRecord(kind, time.monotonic())
    await asyncio.to_thread(switch.disable)
    await asyncio.sleep(seconds)
    await asyncio.to_thread(switch.enable)
    record.restored = time.monotonic()
    return record


async def kill_leader(holder: Callable[[], Awaitable[str]], kill: Callable[[str], None],
                      restart: Callable[[str], None], restart_after: float = 5.0) -> FaultRecord:
    """SIGKILL the replica that holds the Lease; start a replacement after `restart_after` s, as a
    Deployment would."""
    leader = await holder()
    record = FaultRecord("leader", time.monotonic(), detail={"killed": leader})
    kill(leader)
    await asyncio.sleep(restart_after)
    await asyncio.to_thread(restart, leader)
    record.restored = time.monotonic()
    return record


async def restart_apiserver(restart: Callable[[], None]) -> FaultRecord:
    """Stop the API server and start it again (it answers /readyz when this returns)."""
    record = FaultRecord("apiserver", time.monotonic())
    await asyncio.to_thread(restart)
    record.restored = time.monotonic()
    return record


def timetable(kinds: list[str], duration: float) -> list[tuple[float, str]]:
    """When each fault starts, spread over the sustained phase (from its first fifth on, so that
    the operator is at its pace first), in the order given."""
    if not kinds:
        return []
    step = duration * 0.8 / len(kinds)
    return [(duration * 0.15 + i * step, kind) for i, kind in enumerate(kinds)]
