"""DeBo stage 1 end to end: check the fleet, run the trials, pick the policy, write the outputs."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from coformer.adapters import Canonical
from coformer.decompose import Policy, shape_of
from coformer.errors import CoFormerError, InfeasibleFleetError
from coformer.fleet.profile import Fleet
from coformer.search.baselines import heuristic
from coformer.search.config import SearchConfig
from coformer.search.evaluate import SEARCH_METRICS, Evaluator
from coformer.search.feasibility import check_fleet
from coformer.search.report import write_outputs
from coformer.search.results import choose, objective, pareto_front, trials_table
from coformer.search.space import SearchSpace
from coformer.search.tuning import run_trials


@dataclass
class SearchResult:
    table: pd.DataFrame  # every trial: parameters, T, D, objective, feasibility, memory per device
    front: pd.DataFrame  # feasible trials on the (T, D) Pareto front
    chosen: int  # row label of the chosen trial in ``table``
    policy: Policy  # the chosen trial's policy, rebuilt from its parameters
    heuristic: dict  # the speed-proportional baseline, evaluated like a trial
    metrics: dict  # summary written to metrics.json
    seconds: float  # wall time of the whole search


def summarise(table: pd.DataFrame, front: pd.DataFrame, chosen: int, baseline: dict, config: SearchConfig, seconds: float) -> dict:
    row = table.loc[chosen]
    feasible = table[table["feasible"]]
    return {
        "trials": len(table),
        "feasible_trials": len(feasible),
        "pareto_points": len(front),
        "lambda": config.lam,
        "best_objective": feasible["objective"].min() if config.lam is not None else float("nan"),
        "chosen_trial": int(row["trial"]),
        "chosen_latency_ms": row["latency_ms"],
        "chosen_degradation": row["degradation"],
        "chosen_objective": row["objective"],
        "chosen_devices": row["devices"],
        "chosen_method": row["method"],
        "chosen_sync": int(row["sync"]),
        "chosen_keep": float(row["keep"]),
        "chosen_degradation_uncalibrated": row["degradation_uncalibrated"],
        "degradation_estimate": config.degradation,
        "heuristic_latency_ms": baseline["latency_ms"],
        "heuristic_degradation": baseline["degradation"],
        "heuristic_objective": objective(baseline["latency_ms"], baseline["degradation"], config.lam),
        **best_per_method(table, config.lam),
        "seconds": seconds,
    }


def best_per_method(table: pd.DataFrame, lam: float | None) -> dict:
    """``best_objective.<method>``: how the best Single-Edge, Distri-Edge and Aggregate-Edge trials
    compare (NaN for a method no feasible trial tried), so a report can say whether splitting paid."""
    best = {}
    for name in ("Single-Edge", "Distri-Edge", "Aggregate-Edge"):
        rows = table[table["feasible"] & (table["method"] == name)]
        best[f"best_objective.{name}"] = rows["objective"].min() if lam is not None and len(rows) else float("nan")
    return best


def run_search(
    canonical: Canonical,
    batches: list[dict],
    fleet: Fleet,
    config: SearchConfig,
    out: Path,
    fresh: bool = False,
    on_change: str = "error",
    progress: bool = False,
) -> SearchResult:
    """Search policies for ``fleet``, keeping Ray's trials in ``out/ray`` and writing the outputs to ``out``.

    Trials already in ``out/ray`` count towards ``config.trials`` and TPE continues from them;
    ``fresh`` discards them, and ``on_change`` ("error" or "restart") decides what happens when
    they were made for a different search space, fleet or model.
    Raises ``InfeasibleFleetError`` before any trial when not even the smallest policy fits.
    """
    start = time.perf_counter()
    out = Path(out).resolve()
    check_fleet(canonical, fleet, config)
    space = SearchSpace(fleet, shape_of(canonical), config)
    evaluator = Evaluator(canonical, batches, fleet, config)
    baseline = evaluator.evaluate(heuristic(space, evaluator))
    rows = run_trials(space, evaluator, out / "ray", fresh, on_change, progress)
    table = trials_table(rows, config.lam)
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / "trials.csv", index=False)  # kept even when nothing fits
    front = pareto_front(table)
    if front.empty:
        failed = table[table["reason"].astype(str).str.startswith("error")]
        if not failed.empty:
            raise CoFormerError(f"{len(failed)} of {len(table)} trials failed, none fit; first: {failed['reason'].iloc[0]}")
        raise InfeasibleFleetError(
            f"none of the {len(table)} trials fit the fleet's memory (see {out / 'trials.csv'}); raise search.trials, "
            "or lower search.keep_min / search.channels_min"
        )
    chosen = choose(table, front, config.lam)
    policy = evaluator.policy(space.decode(rows[int(table.loc[chosen, "trial"])]["params"]))
    baseline = {k: v for k, v in baseline.items() if k not in SEARCH_METRICS}
    seconds = time.perf_counter() - start
    result = SearchResult(table, front, chosen, policy, baseline, summarise(table, front, chosen, baseline, config, seconds), seconds)
    write_outputs(out, result)
    return result
