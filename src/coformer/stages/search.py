"""Stage ``search``: DeBo stage 1, the decomposition policy search (Ray Tune + Optuna TPE)."""

from __future__ import annotations

from pathlib import Path

import torch

from coformer.loading import load_model
from coformer.params import Params
from coformer.search import run_search
from coformer.search.feasibility import check_fleet
from coformer.search.report import FILES
from coformer.stages.inputs import read_fleet, read_prepared
from coformer.tracking import log_outputs, stage_run


def run(params: Params, prepared: Path | None, fleet: Path | None, out: Path, fresh: bool = False):
    """Search policies for the fleet into ``out`` (policy.json, trials.csv, pareto.csv/png, metrics.json, ray/).

    ``prepared``: the prepare stage's folder; ``fleet``: the profile stage's fleet.json (see
    ``coformer.stages.inputs`` for what None means).
    Stored trials of the same search are continued (a larger ``search.trials`` adds to them); a
    changed space, fleet or model starts over, so the outputs always follow the parameters.
    """
    torch.set_num_threads(1)
    config = params.search
    loaded = load_model(params.base.model)
    fleet = read_fleet(fleet, params)
    check_fleet(loaded.canonical, fleet, config)  # fail before any work when nothing can fit
    max_length = min(config.max_length, loaded.canonical.config.max_tokens or config.max_length)
    batches = read_prepared(prepared, params, loaded.canonical).batches(loaded.processor, "calibration", config.texts, max_length, limit=config.texts)
    with stage_run(params, "search"):
        print(f"search: {config.trials} trials, {loaded.name} on fleet '{fleet.name}' ({len(fleet.devices)} devices)", flush=True)
        result = run_search(loaded.canonical, batches, fleet, config, out, fresh=fresh, on_change="restart", progress=True)
        log_outputs(result.metrics, [out / name for name in FILES])
    m = result.metrics
    print(
        f"search: chosen trial {m['chosen_trial']} on {m['chosen_devices']} (s={m['chosen_sync']}, rho={m['chosen_keep']:.2f}): "
        f"T={m['chosen_latency_ms']:.2f} ms, D={m['chosen_degradation']:.4f}; {m['feasible_trials']}/{m['trials']} feasible; "
        f"{m['seconds']:.0f} s",
        flush=True,
    )
    return result
