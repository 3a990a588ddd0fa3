"""From trial rows to the trials table, its Pareto front over (T, D), and the chosen trial.

Everything is computed from the table itself (not from Optuna's internals), so a restored or
merged search gives the same answer as one that ran in one go.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from coformer.search.evaluate import SEARCH_METRICS

LEADING = ["trial", "experiment", "trial_id", "method", "devices", "keep", "sync", "dealing"]
RESULTS = ["latency_ms", "degradation", "degradation_uncalibrated", "objective", "feasible", "reason", "overflow_device", "overflow_mib"]


def objective(latency_ms, degradation, lam: float | None):
    """``T + lam * D`` (ms); NaN where D was not measured (infeasible) or no lambda is set."""
    return latency_ms + lam * degradation if lam is not None else latency_ms * np.nan


def flatten(params: dict, prefix: str = "") -> dict:
    """``{"devices": {"a": {"heads": x}}}`` -> ``{"heads.a": x}``; other keys stay as they are."""
    flat = {}
    for key, value in params.items():
        if key == "devices":
            for name, device in value.items():
                flat |= {f"{kind}.{name}": v for kind, v in device.items()}
        else:
            flat[prefix + key] = value
    return flat


def trials_table(rows: list[dict], lam: float | None) -> pd.DataFrame:
    """One row per trial: parameters, T (ms), D, objective ``T + lam * D``, feasibility, memory per device."""
    records = []
    for i, row in enumerate(rows):
        records.append({"trial": i, **flatten(row["params"]), **{k: v for k, v in row.items() if k != "params"}})
    table = pd.DataFrame.from_records(records)
    defaults = {"feasible": False, "reason": "", "method": "", "overflow_device": "", "overflow_mib": 0.0}
    defaults |= {"latency_ms": np.nan, "degradation": np.nan, "degradation_uncalibrated": np.nan}
    for column, default in defaults.items():
        if column not in table:
            table[column] = default
    table["feasible"] = table["feasible"].fillna(False).astype(bool)
    table["objective"] = objective(table["latency_ms"], table["degradation"], lam)
    params = sorted(c for c in table.columns if c.split(".")[0] in ("use", "heads", "neurons", "channels"))
    memory = sorted(c for c in table.columns if c.startswith("mem_mib."))
    ordered = [c for c in LEADING if c in table] + params + RESULTS + memory
    rest = [c for c in table.columns if c not in ordered and c not in SEARCH_METRICS]
    return table[ordered + rest + [c for c in SEARCH_METRICS if c in table]]


def pareto_mask(t: np.ndarray, d: np.ndarray) -> np.ndarray:
    """True where no other point is at least as good in both and better in one (minimising both)."""
    t, d = np.asarray(t, float), np.asarray(d, float)
    dominated = (t[None, :] <= t[:, None]) & (d[None, :] <= d[:, None]) & ((t[None, :] < t[:, None]) | (d[None, :] < d[:, None]))
    return ~dominated.any(axis=1)


def pareto_front(table: pd.DataFrame) -> pd.DataFrame:
    """The feasible trials no other feasible trial dominates, by increasing T."""
    feasible = table[table["feasible"]]
    front = feasible[pareto_mask(feasible["latency_ms"].to_numpy(), feasible["degradation"].to_numpy())]
    return front.sort_values(["latency_ms", "degradation"])


def knee(front: pd.DataFrame) -> int:
    """The front's compromise point: closest to the ideal (min T, min D) once both are scaled to [0, 1]."""
    scaled = []
    for column in ("latency_ms", "degradation"):
        values = front[column].to_numpy(float)
        span = values.max() - values.min()
        scaled.append((values - values.min()) / span if span > 0 else np.zeros_like(values))
    return int(front.index[int(np.argmin(np.hypot(*scaled)))])


def choose(table: pd.DataFrame, front: pd.DataFrame, lam: float | None) -> int:
    """Row label of the chosen trial: least objective if lambda is set, else the knee of the front."""
    if lam is not None:
        feasible = table[table["feasible"]]
        return int(feasible.sort_values(["objective", "trial"]).index[0])
    return knee(front)
