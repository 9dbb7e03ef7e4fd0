"""How the command line fails: every error a user, the cluster or the broker can cause is one
line (`error: ...`) with its documented exit code, never a traceback; usage errors too."""

from __future__ import annotations

import functools
import os
import signal
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

import typer
from typer.core import TyperGroup

from ..errors import LimeTaskError, NotFoundError, WaitTimeoutError

# An error is one line: a hostile value (40 KiB of ARGS, say) is cut, not echoed whole.
MAX_ERROR_CHARS = 500
# Libraries whose errors mean "the cluster or the broker said no", never a bug here.
EXTERNAL_MODULES = ("kubernetes", "urllib3", "yaml", "aio_pika", "aiormq", "pamqp", "psycopg", "psycopg_pool",
                    "sqlalchemy", "alembic")


def reader_gone() -> int:
    """The reader of the output has gone (`limetask list | head -5`): the exit code of a Unix
    tool killed by SIGPIPE, and no word about it. Whatever is still written (the flush at exit
    too) goes nowhere instead of failing again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return 128 + signal.SIGPIPE


def one_line(message: str) -> str:
    text = " ".join(message.split())
    return text if len(text) <= MAX_ERROR_CHARS else text[:MAX_ERROR_CHARS - 3] + "..."


class CommandGroup(TyperGroup):
    """Usage errors as one `error:` line and a hint, with or without rich (no box, no usage block)."""

    def main(self, args: Sequence[str] | None = None, prog_name: str | None = None,
             complete_var: str | None = None, standalone_mode: bool = True, windows_expand_args: bool = True,
             **extra: Any) -> Any:
        def run() -> Any:
            return super(CommandGroup, self).main(args, prog_name, complete_var, False, windows_expand_args, **extra)

        if not standalone_mode:
            return run()
        try:
            code = run()
            sys.stdout.flush()  # output still buffered meets a closed pipe here, if anywhere
        except BrokenPipeError:
            sys.exit(reader_gone())
        except typer.Abort:
            typer.echo("Aborted!", err=True)
            sys.exit(1)
        except Exception as exc:
            # click's own exceptions (newer typer vendors click): matched by their shape.
            exit_code = getattr(exc, "exit_code", None)
            if not (hasattr(exc, "format_message") and isinstance(exit_code, int)):
                raise
            ctx = getattr(exc, "ctx", None)
            if type(exc).__name__ == "NoArgsIsHelpError":
                if exc.format_message():  # with rich, the help is printed already
                    typer.echo(exc.format_message(), err=True)
            else:
                typer.secho(f"error: {one_line(exc.format_message())}", fg=typer.colors.RED, err=True)
                if ctx is not None:
                    typer.echo(f"Try '{ctx.command_path} --help' for help.", err=True)
            sys.exit(exit_code)
        sys.exit(code if isinstance(code, int) else 0)


def fail(message: str, code: int = 2) -> NoReturn:
    typer.secho(f"error: {one_line(message)}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


def describe(exc: BaseException) -> str:
    """One line for an error from a library: the Kubernetes client's own text spans many lines."""
    status, reason = getattr(exc, "status", None), getattr(exc, "reason", None)
    if type(exc).__module__.startswith("kubernetes") and status is not None:
        return f"{type(exc).__name__}: {status} {reason}"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def is_external(exc: BaseException) -> bool:
    """An error of the network, the cluster or the broker: reported in one line, never a traceback."""
    return isinstance(exc, OSError) or any(c.__module__.split(".")[0] in EXTERNAL_MODULES for c in type(exc).__mro__)


def guard(fn: Any) -> Any:
    """Every error a user, the cluster or the broker can cause, as one line with its documented exit code."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (typer.Exit, typer.Abort):
            raise
        except BrokenPipeError:
            raise typer.Exit(reader_gone()) from None
        except WaitTimeoutError as exc:
            fail(describe(exc), code=3)
        except NotFoundError as exc:
            fail(describe(exc), code=1)
        except LimeTaskError as exc:
            fail(describe(exc))
        except RecursionError:
            fail("the input nests too deeply")
        except Exception as exc:
            if not is_external(exc):
                raise
            fail(describe(exc))
    return wrapper
