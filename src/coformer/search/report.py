"""The search stage's outputs: files in one folder, a Pareto plot, and one MLflow run."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd

FILES = ("policy.json", "trials.csv", "pareto.csv", "metrics.json", "pareto.png")


def plot_pareto(table: pd.DataFrame, front: pd.DataFrame, chosen: int, heuristic: dict | None, path: Path) -> Path:
    """Every feasible trial in (T, D), the front as a step line, the chosen policy and the heuristic marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4.2))
    feasible = table[table["feasible"]]
    ax.scatter(feasible["latency_ms"], feasible["degradation"], s=14, c="0.6", label=f"feasible trials ({len(feasible)})")
    ax.step(front["latency_ms"], front["degradation"], where="post", c="tab:blue", lw=1.2, label="Pareto front")
    ax.scatter(front["latency_ms"], front["degradation"], s=22, c="tab:blue")
    row = table.loc[chosen]
    ax.scatter([row["latency_ms"]], [row["degradation"]], s=90, marker="*", c="tab:red", zorder=3, label="chosen")
    if heuristic and heuristic.get("feasible"):
        ax.scatter([heuristic["latency_ms"]], [heuristic["degradation"]], s=50, marker="s", c="tab:green", label="speed-proportional")
    if feasible["latency_ms"].max() > 20 * feasible["latency_ms"].min():
        ax.set_xscale("log")  # T spans orders of magnitude between s = 0 and s = 1 over slow links
    ax.set_xlabel("T: predicted latency on the fleet (ms)")
    ax.set_ylabel("D: degradation vs teacher (uncalibrated)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def jsonable(value):
    """Numbers as JSON can hold them: NaN/inf become null, numpy scalars plain Python."""
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_outputs(out: Path, result) -> list[Path]:
    """policy.json, trials.csv, pareto.csv, metrics.json and pareto.png of a ``SearchResult``."""
    out.mkdir(parents=True, exist_ok=True)
    result.policy.save(out / "policy.json")
    result.table.to_csv(out / "trials.csv", index=False)
    result.front.to_csv(out / "pareto.csv", index=False)
    (out / "metrics.json").write_text(json.dumps({k: jsonable(v) for k, v in result.metrics.items()}, indent=1))
    plot_pareto(result.table, result.front, result.chosen, result.heuristic, out / "pareto.png")
    return [out / f for f in FILES]


def log_mlflow(out: Path, result, params: dict, tracking_uri: str, experiment: str, run_name: str = "search") -> str:
    """One MLflow run: the search parameters, the chosen policy's metrics, and the output files as artifacts."""
    import mlflow

    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_experiment(experiment)
    with mlflow.start_run(run_name=run_name) as run:
        mlflow.log_params({k: jsonable(v) for k, v in params.items()})
        mlflow.log_metrics({k: float(v) for k, v in result.metrics.items() if isinstance(jsonable(v), (int, float)) and not isinstance(v, bool)})
        for name in FILES:
            mlflow.log_artifact(str(out / name))
        return run.info.run_id
