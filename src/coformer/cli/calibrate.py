"""``coformer calibrate``: DeBo stage 2, calibrate a decomposed folder (the ``calibrate`` stage)."""

from __future__ import annotations

from pathlib import Path

import typer

from coformer.cli import app, console
from coformer.cli.options import PARAMS, PREPARED, SET, read_params


@app.command("calibrate")
def calibrate_command(
    decomposed: Path = typer.Option(..., help="folder with policy.json (and devices/, aggregator/) from `coformer decompose` or the search"),
    out: Path = typer.Option(Path("outputs/calibrated"), help="output folder; a killed run started again here resumes"),
    prepared: Path = PREPARED,
    params: Path = PARAMS,
    set_: list[str] = SET,
) -> None:
    """Calibrate sub-models progressively against base.model; write safetensors + JSON and register them in MLflow."""
    from coformer.stages import calibrate

    metrics = calibrate.run(read_params(params, set_), prepared, decomposed, out)
    console.print(metrics)
    console.print(f"wrote {out}/policy.json, {out}/devices/*, {out}/aggregator, metrics.json, curve.csv")
