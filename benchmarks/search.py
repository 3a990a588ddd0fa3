"""Benchmark DeBo stage 1: TPE vs random search at equal budget vs the speed-proportional heuristic.

On the default fleet and the embedded MiniLM, for each seed, run the search with Optuna's TPE and
with random sampling (same space, same N trials, real Ray Tune trials), and evaluate the
heuristic (shares proportional to device speed, s = 0, rho = 1). Prints the best objective
``T + lambda * D`` per seed, the medians, and the wall time of one default search (model load,
calibration data and N trials on this machine).

    .venv/bin/python benchmarks/search.py [--trials N] [--seeds 0 1 2]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from coformer.data import calibration_batches
from coformer.fleet.profile import load_fleet
from coformer.loading import load_model
from coformer.params import load_params
from coformer.search import run_search


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=None, help="trials per search (default: search.trials)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args()
    torch.set_num_threads(1)

    start = time.perf_counter()
    params = load_params(Path("params.yaml"), [f"search.trials={args.trials}"] if args.trials else [])
    loaded = load_model(params.base.model)
    fleet = load_fleet(params.base.fleet)
    config = params.search
    batches = calibration_batches(
        loaded.processor, loaded.canonical.config, n=config.texts, batch_size=config.texts, max_length=config.max_length
    )
    setup = time.perf_counter() - start
    rows, default_seconds = [], None
    with tempfile.TemporaryDirectory(prefix="search-bench-") as tmp:
        for seed in args.seeds:
            best = {}
            for sampler in ("tpe", "random"):
                run = config.model_copy(update={"seed": seed, "sampler": sampler})
                result = run_search(loaded.canonical, batches, fleet, run, Path(tmp) / f"{sampler}-{seed}")
                best[sampler] = result.metrics["best_objective"]
                if default_seconds is None:
                    default_seconds = setup + result.seconds
                print(f"seed {seed} {sampler:6s}: best objective {best[sampler]:.2f} ({result.metrics['feasible_trials']}/{run.trials} feasible, {result.seconds:.0f} s)", flush=True)
            rows.append((seed, best["tpe"], best["random"], result.metrics["heuristic_objective"]))

    print(f"\nfleet '{fleet.name}', {loaded.name}, N = {config.trials} trials, lambda = {config.lam} ms per unit of D (objective in ms)")
    print(f"{'seed':>6} {'TPE':>10} {'random':>10} {'heuristic':>10}")
    for seed, tpe, rnd, heur in rows:
        print(f"{seed:>6} {tpe:>10.2f} {rnd:>10.2f} {heur:>10.2f}")
    medians = [statistics.median(r[i] for r in rows) for i in (1, 2, 3)]
    print(f"{'median':>6} {medians[0]:>10.2f} {medians[1]:>10.2f} {medians[2]:>10.2f}")
    print(f"TPE no worse than random: {medians[0] <= medians[1]}; TPE better than the heuristic: {medians[0] < medians[2]}")
    print(f"one default search (model load, calibration data, {config.trials} trials, seed {args.seeds[0]}): {default_seconds:.0f} s")


if __name__ == "__main__":
    main()
