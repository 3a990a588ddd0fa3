"""The ``coformer`` command: one entry point, one module per subcommand.

Every subcommand module registers itself on ``app``; errors of our own type become one red line
and exit code 2 instead of a traceback (one line also when stderr is a file or a pipe, where rich
would otherwise wrap it at 80 columns).
"""

from __future__ import annotations

import sys

import typer
from rich.console import Console
from rich.markup import escape

from coformer import __version__
from coformer.errors import CoFormerError

app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
console = Console(stderr=True)


def show_version(value: bool) -> None:
    if value:
        typer.echo(f"coformer {__version__}")
        raise typer.Exit()


@app.callback()
def cli(
    version: bool = typer.Option(False, "--version", callback=show_version, is_eager=True, help="print the version and exit"),
) -> None:
    """CoFormer: decompose a transformer into sub-models for a fleet of unequal edge devices."""

from coformer.cli import calibrate  # noqa: E402,F401  (registers its command)
from coformer.cli import decompose  # noqa: E402,F401  (registers its command)
from coformer.cli import deploy  # noqa: E402,F401  (registers its command)
from coformer.cli import predict  # noqa: E402,F401  (registers its command)
from coformer.cli import prepare  # noqa: E402,F401  (registers its command)
from coformer.cli import profile  # noqa: E402,F401  (registers its command)
from coformer.cli import search  # noqa: E402,F401  (registers its command)


def main() -> None:
    try:
        app()
    except CoFormerError as e:
        console.print(f"[red]error:[/red] {escape(' '.join(str(e).split()))}", soft_wrap=True, highlight=False)
        sys.exit(2)
