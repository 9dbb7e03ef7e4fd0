"""dev: a solution's own tasks on the local cluster (a limetask checkout's `make cluster-up`)."""

from __future__ import annotations

import signal
from types import FrameType
from typing import Annotated

import typer

from .failures import fail, guard


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


@guard
def dev(
    path: Annotated[str, typer.Argument(help="the solution's folder (where pyproject.toml and Dockerfile.tasks are)")]
    = ".",
    watch: Annotated[bool, typer.Option("--watch", "-w", help="rebuild, reload and restart on every change")] = False,
    build_only: Annotated[bool, typer.Option("--build-only", help="build and load the image, print its name, "
                                                                   "and stop (no operator)")] = False,
    namespace: Annotated[str, typer.Option("--namespace", "-n", help="the namespace the operator handles")]
    = "limetask-dev",
    interval: Annotated[float, typer.Option(min=0.05, help="with --watch: seconds between two looks at the files")]
    = 0.5,
    quiet: Annotated[float, typer.Option(min=0, help="with --watch: rebuild once the files have been still "
                                                       "this many seconds")] = 1.0,
) -> None:
    """Run the solution's tasks on the local cluster until Ctrl-C.

    Builds the solution's runner image (Dockerfile.tasks) FROM the local runner image, loads it into
    the node, and runs the operator with it.

    The local cluster is a limetask checkout's (`make cluster-up` there): the checkout this limetask
    is installed from, or LIMETASK_CHECKOUT; its state is in LIMETASK_CLUSTER_DIR, else .cluster/.

    Example: cd my-solution && limetask generate tasks && limetask dev --watch
    """
    from ..dev import DevError, run

    # Ctrl-C, and `kill` (SIGTERM) alike, stop the operator it started and end it with exit 0;
    # SIGINT too is set here, since a shell starts a background command with it ignored.
    previous = {sig: signal.signal(sig, _interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        run(path, namespace=namespace, watch=watch, build_only=build_only, interval=interval, quiet=quiet)
    except DevError as exc:
        fail(str(exc), code=1)
    except KeyboardInterrupt:
        pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
