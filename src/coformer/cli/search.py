"""``coformer search``: DeBo stage 1, the decomposition policy search for a fleet (Ray Tune + Optuna)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from coformer.cli import app, console
from coformer.loading import DEFAULT_MODEL
from coformer.search.config import SearchConfig

DEFAULTS = {name: field.default for name, field in SearchConfig.model_fields.items()}


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
    model: str = typer.Option(DEFAULT_MODEL, help="hub id, local folder, or the embedded default"),
    fleet: str = typer.Option("default", help="catalog fleet name or a fleet YAML/JSON file"),
    trials: int = typer.Option(DEFAULTS["trials"], min=1, help="policies to evaluate (Ray Tune trials), stored ones included"),
    concurrency: int = typer.Option(DEFAULTS["concurrency"], min=1, help="trials running at once"),
    seed: int = typer.Option(0, help="sampler seed"),
    lam: float = typer.Option(DEFAULTS["lam"], "--lambda", min=0, help="objective T + lambda * D with T in ms: ms one unit of degradation is worth"),
    knee: bool = typer.Option(False, help="ignore lambda; choose the knee of the (T, D) Pareto front"),
    sampler: str = typer.Option("tpe", help="tpe | random"),
    source: str = typer.Option("builtin", help="calibration texts: builtin, a hub dataset id, or a local file"),
    out: Path = typer.Option(Path("outputs/search"), help="folder for policy.json, trials.csv, pareto.csv, ray/"),
    fresh: bool = typer.Option(False, help="discard trials stored in OUT/ray instead of continuing from them"),
    tracking_uri: str = typer.Option(None, help="log an MLflow run there (e.g. sqlite:///mlflow.db)"),
    experiment: str = typer.Option("coformer", help="MLflow experiment"),
) -> None:
    """Search how to split the model over the fleet: minimise T + lambda * D within every device's memory."""
    import torch

    from coformer.data import calibration_batches
    from coformer.fleet.profile import load_fleet
    from coformer.loading import load_model
    from coformer.search import run_search
    from coformer.search.feasibility import check_fleet
    from coformer.search.report import log_mlflow

    torch.set_num_threads(1)
    config = SearchConfig.parse({"trials": trials, "concurrency": concurrency, "seed": seed, "lambda": None if knee else lam, "sampler": sampler})
    target = load_fleet(fleet)
    loaded = load_model(model)
    check_fleet(loaded.canonical, target, config)  # fail before loading data when nothing can fit
    batches = calibration_batches(
        loaded.processor, loaded.canonical.config, source=source, n=config.texts, batch_size=config.texts,
        max_length=config.max_length, seed=seed,
    )
    console.print(f"searching {config.trials} policies for {loaded.name} on fleet '{target.name}' ({len(target.devices)} devices)")
    result = run_search(loaded.canonical, batches, target, config, out, fresh=fresh, progress=True)
    console.print(summary_table(result))
    if tracking_uri:
        run_id = log_mlflow(out, result, config.model_dump(by_alias=True) | {"model": model, "fleet": fleet}, tracking_uri, experiment)
        console.print(f"MLflow run {run_id}")
    console.print(f"wrote {out}/policy.json, trials.csv, pareto.csv, metrics.json, pareto.png")
