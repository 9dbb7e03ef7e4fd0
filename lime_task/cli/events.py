"""Events: tail an application's completion events from the broker."""

from __future__ import annotations

import contextlib
import json
import logging
import sys
from collections.abc import Iterator
from typing import Annotated, Any

import typer

from ..errors import LimeTaskError
from .failures import describe, fail, guard, is_external, one_line
from .options import Output, OutputOpt, positive_seconds


class _OneLineFormatter(logging.Formatter):
    """A library's log record as one `warning:` line: no traceback in the middle of a tail."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if record.exc_info and record.exc_info[1] is not None:
            message = f"{message} ({describe(record.exc_info[1])})"
        return f"warning: {one_line(message)}"


@contextlib.contextmanager
def _one_line_logs() -> Iterator[None]:
    """Warnings (a lost connection, an event that is not JSON) on stderr, one line each.

    aiormq also logs every failed connection attempt as an error; the CLI reports the failure
    itself (and aio-pika warns about reconnections), so that one is kept quiet.
    """
    handler = logging.StreamHandler(sys.stderr)
    handler.setLevel(logging.WARNING)
    handler.setFormatter(_OneLineFormatter())
    root, aiormq = logging.getLogger(), logging.getLogger("aiormq")
    level = aiormq.level
    root.addHandler(handler)
    aiormq.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        root.removeHandler(handler)
        aiormq.setLevel(level)


def _check_amqp_name(name: str, what: str) -> None:
    """AMQP names are at most 255 bytes; the client library would raise a bare ValueError."""
    if len(name.encode()) > 255:
        fail(f"{what} {name[:40]!r}... is longer than 255 bytes")


@guard
def events(
    app_name: Annotated[str, typer.Argument(metavar="APP", help="application name")],
    pattern: Annotated[list[str] | None, typer.Option("--pattern", "-p", help="routing-key pattern; repeat for "
                                                      "several (default core.task.#)")] = None,
    broker: Annotated[str | None, typer.Option(envvar="LIMETASK_BROKER_URL", help="amqp:// URL of the broker",
                                               show_envvar=True)] = None,
    exchange: Annotated[str | None, typer.Option(help="exchange (default lime.APP)")] = None,
    count: Annotated[int | None, typer.Option(min=1, help="stop after this many events")] = None,
    timeout: Annotated[float | None, typer.Option(callback=positive_seconds,
                                                  help="stop after this many seconds")] = None,
    output: OutputOpt = Output.text,
) -> None:
    """Tail the completion events of an application.

    Example: limetask events my-app -p 'core.task.#.failure.v1' --broker amqp://guest:guest@localhost/
    """
    import asyncio

    from ..events import check_broker_url, consume, exchange_name, redact
    from ..validation import check_app_name

    if not broker:
        fail("no broker: pass --broker or set LIMETASK_BROKER_URL")
    check_broker_url(broker)
    check_app_name(app_name)
    patterns = pattern or ["core.task.#"]
    exchange = exchange or exchange_name(app_name)
    if exchange.startswith("amq."):
        fail(f"exchange {exchange!r}: names starting with 'amq.' are reserved by RabbitMQ; "
              f"the operator publishes to lime.APP unless configured otherwise")
    _check_amqp_name(exchange, "exchange")
    for p in patterns:
        _check_amqp_name(p, "pattern")
    try:
        import aio_pika  # noqa: F401 - only to say which extra is missing
    except ImportError:
        fail("the events consumer is not installed: pip install 'limetask[events]'")
    url, seen = broker, 0

    async def main() -> None:
        stop = asyncio.Event()
        ready = asyncio.Event()

        async def show(event: dict[str, Any]) -> None:
            nonlocal seen
            seen += 1
            if output is Output.json:
                typer.echo(json.dumps(event))
            else:
                detail = json.dumps(event.get("result")) if event.get("state") == "SUCCESS" else event.get("error")
                typer.echo(f"{event.get('completed_at')}  {event.get('state')!s:7}  {event.get('task')}  "
                           f"{event.get('id')}  {detail}")
            if count and seen >= count:
                stop.set()

        consumer = asyncio.create_task(consume(url, app_name, show, patterns=patterns, exchange=exchange,
                                               stop=stop, ready=ready))
        await asyncio.wait([consumer, asyncio.create_task(ready.wait())], return_when=asyncio.FIRST_COMPLETED)
        if consumer.done():
            consumer.result()
        typer.echo(f"listening on {exchange} at {redact(url)}  ({', '.join(patterns)}); Ctrl-C to stop", err=True)
        try:
            await asyncio.wait_for(consumer, timeout)
        except asyncio.TimeoutError:
            pass

    try:
        with _one_line_logs():
            asyncio.run(main())
    except KeyboardInterrupt:
        pass
    except Exception as exc:
        if isinstance(exc, LimeTaskError) or not is_external(exc):
            raise
        fail(f"the broker at {redact(url)} (exchange {exchange!r}): {describe(exc)}")
