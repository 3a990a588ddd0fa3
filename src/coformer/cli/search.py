"""``coformer search``: DeBo stage 1, the decomposition policy search (the ``search`` stage)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from coformer.cli import app, console
from coformer.cli.options import FLEET, PARAMS, PREPARED, SET, read_params


def summary_table(result) -> Table:
    m = result.metrics
    table = Table(title=f"policy search: {m['trials']} trials, {m['feasible_trials']} feasible, {m['seconds']:.0f} s")
    for column in ("policy", "devices", "s", "rho", "T (ms)", "D", "objective"):
        table.add_column(column, justify="left" if column in ("policy", "devices") else "right", overflow="fold")
    row, h = result.table.loc[result.chosen], result.heuristic
    for name, devices, sync, keep, t, d, objective in (
        ("chosen", row["devices"], row["sync"], row["keep"], row["latency_ms"], row["degradation"], row["objective"]),
        ("heuristic", h["devices"], 0, 1.0, h["latency_ms"], h["degradation"], m["heuristic_objective"]),
    ):
        table.add_row(name, devices, str(sync), f"{keep:.2f}", f"{t:.2f}", f"{d:.4f}", f"{objective:.2f}")
    table.caption = "heuristic: shares proportional to device speed, s = 0, rho = 1"
    return table


@app.command("search")
def search_command(
    out: Path = typer.Option(Path("outputs/search"), help="folder for policy.json, trials.csv, pareto.csv/png, metrics.json, ray/"),
    prepared: Path = PREPARED,
    fleet: Path = FLEET,
    fresh: bool = typer.Option(False, help="discard trials stored in OUT/ray instead of continuing from them"),
    params: Path = PARAMS,
    set_: list[str] = SET,
) -> None:
    """Search how to split base.model over the fleet: minimise T + lambda * D within every device's memory."""
    from coformer.stages import search

    result = search.run(read_params(params, set_), prepared, fleet, out, fresh=fresh)
    console.print(summary_table(result))
    console.print(f"wrote {out}/policy.json, trials.csv, pareto.csv, metrics.json, pareto.png")
