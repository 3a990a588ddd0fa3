"""``coformer prepare``: materialise the calibration and evaluation splits (the ``prepare`` stage)."""

from __future__ import annotations

from pathlib import Path

import typer

from coformer.cli import app, console
from coformer.cli.options import PARAMS, SET, read_params


@app.command("prepare")
def prepare_command(
    out: Path = typer.Option(Path("outputs/prepare/data"), help="folder for the splits (calibration, evaluation, pairs)"),
    metrics: Path = typer.Option(Path("outputs/prepare/metrics.json"), help="counts and token-length statistics"),
    params: Path = PARAMS,
    set_: list[str] = SET,
) -> None:
    """Read data.source and write the splits every later stage reads, with their statistics."""
    from coformer.stages import prepare

    stats = prepare.run(read_params(params, set_), out, metrics)
    console.print(stats)
