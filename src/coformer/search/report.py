"""The search stage's outputs: files in one folder and a Pareto plot."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd

FILES = ("policy.json", "trials.csv", "pareto.csv", "metrics.json", "pareto.png")


MARKERS = {  # the best trial of every method the paper compares, on the plot
    "Single-Edge": ("v", "tab:purple", "Single-Edge: compressed single model"),
    "Distri-Edge": ("D", "tab:orange", "Distri-Edge: tensor parallel, s = 1"),
    "Aggregate-Edge": ("^", "tab:cyan", "Aggregate-Edge: CoFormer, s = 0"),
}
Y_LABELS = {
    "refit": "D after a least-squares refit (calibration-aware)",
    "warm-start": "D after a least-squares warm start (calibration-aware)",
    "uncalibrated": "D: degradation vs teacher (uncalibrated)",
}


def plot_pareto(
    table: pd.DataFrame, front: pd.DataFrame, chosen: int, heuristic: dict | None, path: Path, estimate: str = "uncalibrated"
) -> Path:
    """Every feasible trial in (T, D), the front as a step line, the chosen policy, the heuristic and
    the best trial of each method (lowest objective, else lowest D) marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    feasible = table[table["feasible"]]
    ax.scatter(feasible["latency_ms"], feasible["degradation"], s=14, c="0.6", label=f"feasible trials ({len(feasible)})")
    ax.step(front["latency_ms"], front["degradation"], where="post", c="tab:blue", lw=1.2, label="Pareto front")
    ax.scatter(front["latency_ms"], front["degradation"], s=22, c="tab:blue")
    ranking = "objective" if feasible["objective"].notna().any() else "degradation"
    for method, (marker, color, label) in MARKERS.items():
        rows = feasible[feasible["method"] == method]
        if len(rows):
            best = rows.loc[rows[ranking].idxmin()]
            ax.scatter([best["latency_ms"]], [best["degradation"]], s=60, marker=marker, c=color, zorder=3, label=label)
    row = table.loc[chosen]
    ax.scatter([row["latency_ms"]], [row["degradation"]], s=120, marker="*", c="tab:red", zorder=4, label=f"chosen ({row['method']})")
    if heuristic and heuristic.get("feasible"):
        ax.scatter([heuristic["latency_ms"]], [heuristic["degradation"]], s=50, marker="s", c="tab:green", label="speed-proportional")
    if feasible["latency_ms"].max() > 20 * feasible["latency_ms"].min():
        ax.set_xscale("log")  # T spans orders of magnitude between s = 0 and s = 1 over slow links
    ax.set_xlabel("T: predicted latency on the fleet (ms)")
    ax.set_ylabel(Y_LABELS[estimate])
    ax.legend(fontsize=7)
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
    estimate = result.metrics.get("degradation_estimate", "uncalibrated")
    plot_pareto(result.table, result.front, result.chosen, result.heuristic, out / "pareto.png", estimate)
    return [out / f for f in FILES]

