"""The ``coformer`` command: one entry point, one module per subcommand.

Every subcommand module registers itself on ``app``; errors of our own type become one red line
and exit code 2 instead of a traceback.
"""

from __future__ import annotations

import sys

import typer
from rich.console import Console

from coformer.errors import CoFormerError

app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
console = Console(stderr=True)


@app.callback()
def cli() -> None:
    """CoFormer: decompose a transformer into sub-models for a fleet of unequal edge devices."""

from coformer.cli import calibrate  # noqa: E402,F401  (registers its command)
from coformer.cli import decompose  # noqa: E402,F401  (registers its command)
from coformer.cli import predict  # noqa: E402,F401  (registers its command)
from coformer.cli import profile  # noqa: E402,F401  (registers its command)
from coformer.cli import search  # noqa: E402,F401  (registers its command)


def main() -> None:
    try:
        app()
    except CoFormerError as e:
        console.print(f"[red]error:[/red] {e}")
        sys.exit(2)
