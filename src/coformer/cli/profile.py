"""``coformer profile``: measure this machine and resolve the fleet (the ``profile`` stage)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from coformer.cli import app, console
from coformer.cli.options import PARAMS, SET, read_params


def metrics_table(metrics: dict) -> Table:
    table = Table(title="this machine, one core as one device (and the whole machine)")
    table.add_column("measurement")
    table.add_column("value", justify="right")
    for key, value in metrics.items():
        table.add_row(key, f"{value:,.3g}" if isinstance(value, float) else str(value))
    return table


@app.command("profile")
def profile_command(
    out: Path = typer.Option(Path("outputs/profile"), help="folder for device.json, fleet.json and metrics.json"),
    params: Path = PARAMS,
    set_: list[str] = SET,
) -> None:
    """Measure matmul throughput, memory bandwidth, overheads and the link at the model's shapes."""
    from coformer.stages import profile

    console.print(metrics_table(profile.run(read_params(params, set_), out)))
    console.print(f"wrote {out}/device.json, fleet.json, metrics.json")
