"""The operator, run from the command line (the `operator` extra)."""

from __future__ import annotations

import typer

from .failures import fail, guard


@guard
def operator(ctx: typer.Context) -> None:
    """Run the operator (same options as `python -m limetask_operator --help`).

    Example: limetask operator --all-namespaces
    """
    try:
        from limetask_operator.main import main as operator_main
    except ImportError:
        fail("the operator is not installed: pip install 'limetask[operator]'")
    raise typer.Exit(operator_main(list(ctx.args)))
