"""DVC stage `search`: DeBo stage 1, the decomposition policy search (Ray Tune + Optuna TPE).

Reads `base` and `search` from params.yaml, the fleet the `profile` stage wrote (or the catalog
fleet `base.fleet` when that stage has not run), and writes `outputs/search/`: policy.json,
trials.csv, pareto.csv, metrics.json, pareto.png, and Ray's trial store under ray/ (a rerun with
a larger `search.trials` continues from it). Logs one MLflow run.
"""

from __future__ import annotations

from pathlib import Path

import torch
from pipelines.common import load_params, run_stage

from coformer.data import calibration_batches
from coformer.fleet.profile import load_fleet
from coformer.loading import load_model
from coformer.search import SearchConfig, run_search
from coformer.search.report import log_mlflow

PROFILED_FLEET = Path("outputs/profile/fleet.json")
OUT = Path("outputs/search")


def main() -> None:
    torch.set_num_threads(1)
    base, data, section = load_params("search")
    config = SearchConfig.parse({**section, "seed": base["seed"]})
    fleet = load_fleet(PROFILED_FLEET if PROFILED_FLEET.is_file() else base["fleet"])
    loaded = load_model(base["model"])
    source = data.get("source", "builtin")
    batches = calibration_batches(
        loaded.processor, loaded.canonical.config, source=source, n=config.texts, batch_size=config.texts,
        max_length=config.max_length, seed=base["seed"],
    )
    print(f"search: {config.trials} trials, {loaded.name} on fleet '{fleet.name}' ({len(fleet.devices)} devices)", flush=True)
    # Stored trials of the same search are continued (a larger search.trials adds to them); a
    # changed space, fleet or model starts over, so the outputs always follow params.yaml.
    result = run_search(loaded.canonical, batches, fleet, config, OUT, on_change="restart", progress=True)
    logged = config.model_dump(by_alias=True) | {"model": base["model"], "fleet": fleet.name}
    log_mlflow(OUT, result, logged, base["tracking_uri"], base["experiment"])
    m = result.metrics
    print(
        f"search: chosen trial {m['chosen_trial']} on {m['chosen_devices']} (s={m['chosen_sync']}, rho={m['chosen_keep']:.2f}): "
        f"T={m['chosen_latency_ms']:.2f} ms, D={m['chosen_degradation']:.4f}; {m['feasible_trials']}/{m['trials']} feasible; "
        f"{m['seconds']:.0f} s"
    )


if __name__ == "__main__":
    run_stage(main)
