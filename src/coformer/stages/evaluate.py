"""Stage ``evaluate``: every method as real device processes beside the cost model (``coformer.evaluation``)."""

from __future__ import annotations

from pathlib import Path

from coformer.evaluation import run_evaluation
from coformer.loading import load_model
from coformer.params import Params
from coformer.stages.inputs import read_prepared
from coformer.tracking import log_outputs, stage_run


def run(params: Params, prepared: Path | None, calibrated: Path, fleet: Path | None, device: Path | None, out: Path) -> dict:
    """Measure the full model, Pipe-Edge, Distri-Edge, Single-Edge, Aggregate-Edge and the
    calibrated policy in ``calibrated`` into ``out`` (metrics.json, CSVs, PNGs, report.md).

    ``fleet``: the profile stage's fleet.json (None: ``base.fleet``); ``device``: its device.json,
    the one-core profile predictions are made for (None: measured now).
    """
    loaded = load_model(params.base.model)
    data = read_prepared(prepared, params, loaded.canonical)
    with stage_run(params, "evaluate"):
        metrics = run_evaluation(
            loaded, calibrated, fleet or params.base.fleet, data, out, params.evaluate, params.calibrate, profile=device,
        )  # fmt: skip
        log_outputs(flat_numbers(metrics), sorted(p for p in out.iterdir() if p.is_file()))
    return metrics


def flat_numbers(metrics: dict, prefix: str = "") -> dict[str, float]:
    """Nested metrics as ``methods.coformer.latency_ms``-style keys, numbers only."""
    flat = {}
    for key, value in metrics.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat |= flat_numbers(value, f"{name}.")
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            flat[name] = value
    return flat
