"""Ray Tune around the evaluator: one real trial per policy, Optuna's TPE (or random) proposing them.

Storage is ``<out>/ray``: every call runs (or finishes) experiments named ``<sampler>-000``,
``<sampler>-001``, ... An interrupted experiment is finished with ``Tuner.restore``; a larger
budget adds an experiment whose searcher is restored from the previous one
(``Searcher.restore_from_dir``), so TPE continues from every stored trial. ``space.json`` records
what the stored trials depend on (space, fleet, model shape); they never mix with another search's.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path

import optuna
import ray
import torch
from ray import tune
from ray.tune.result import AUTO_RESULT_KEYS
from ray.tune.search import ConcurrencyLimiter
from ray.tune.search.optuna import OptunaSearch

from coformer.errors import CoFormerError
from coformer.search.evaluate import SEARCH_METRICS, Evaluator
from coformer.search.space import SearchSpace

CONSTRAINT = "overflow_bytes"  # reported by every trial; > 0 means a device ran out of memory
SYNC_PERIOD_S = 5  # Tune stages results in its session folder; copy them to the store this often (crash loss)
RAY_KEYS = {*AUTO_RESULT_KEYS, "done", "trial_id", "experiment_tag"}  # what Tune adds to a trial's report


@contextmanager
def ray_session(num_cpus: int, address: str | None = None):
    """A quiet Ray for the duration of the block, unless one is running already: the cluster at
    ``address`` (else at ``RAY_ADDRESS``), or a local Ray of ``num_cpus`` CPUs started here.

    On a cluster every trial takes one CPU wherever Ray places it: what it needs (model, batches,
    teacher outputs) reaches it through the object store (``tune.with_parameters``), and it reports
    its metrics back to this driver, which alone writes the trial store.
    """
    if ray.is_initialized():
        yield
        return
    address = address or os.environ.get("RAY_ADDRESS")
    temp = None if address else tempfile.mkdtemp(prefix="cfray", dir="/tmp")  # short: Ray's socket paths have a length limit
    quiet = {"include_dashboard": False, "log_to_driver": False, "logging_level": "ERROR"}
    try:
        if address:
            ray.init(address=address, **quiet)
        else:
            ray.init(address="local", num_cpus=num_cpus, _temp_dir=temp, **quiet)
        yield
    finally:
        ray.shutdown()
        if temp:
            shutil.rmtree(temp, ignore_errors=True)


class TrialProgress(tune.Callback):
    """One line per finished trial on the driver's stderr (Ray's own output stays off)."""

    def __init__(self, done: int, total: int):
        self.done, self.total = done, total

    def on_trial_complete(self, iteration, trials, trial, **info):
        self.done += 1
        r = trial.last_result or {}
        what = r.get("reason", "error")
        if r.get("feasible"):
            what = f"T={r['latency_ms']:.2f} ms D={r['degradation']:.4f} (uncalibrated {r['degradation_uncalibrated']:.4f})"
        where = f"{r.get('method', '')} on {r.get('devices', '')}"
        if r.get("method") != "Single-Edge":  # one device has no sync point, whatever s was sampled
            where += f", s={r.get('sync', trial.config.get('sync'))}"
        print(f"trial {self.done}/{self.total} [{where}]: {what}", file=sys.stderr, flush=True)


def trial(params: dict, space: SearchSpace, evaluator: Evaluator) -> None:
    """The Ray Tune trainable: decode the point, price it, measure it, report once."""
    torch.set_num_threads(1)
    tune.report(evaluator.evaluate(space.decode(params)))


class ConstrainedOptunaSearch(OptunaSearch):
    """OptunaSearch that also tells Optuna each trial's memory overflow as a constraint (<= 0 feasible),
    so TPE ranks every infeasible trial below the feasible ones whatever values it reported."""

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False):
        if result and trial_id in self._ot_trials:
            self._ot_trials[trial_id].set_constraint(CONSTRAINT, float(result.get(CONSTRAINT, 0.0)))
        super().on_trial_complete(trial_id, result, error)


def trial_dirname(trial) -> str:
    """``trial_00006_<id>``: the searcher's proposal number first, so the store sorts in proposal order."""
    return f"trial_{int(trial.experiment_tag.split('_')[0]):05d}_{trial.trial_id}"


def proposal_number(result) -> int:
    return int(Path(result.path).name.split("_")[1])


def make_searcher(space: SearchSpace) -> OptunaSearch:
    """Multi-objective over (T, D), seeded: TPE (multivariate, constraint-aware) or random sampling."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    config = space.config
    if config.sampler == "tpe":
        sampler = optuna.samplers.TPESampler(seed=config.seed, multivariate=True)
    else:
        sampler = optuna.samplers.RandomSampler(seed=config.seed)
    return ConstrainedOptunaSearch(
        space=OptunaSearch.convert_search_space(space.param_space()),
        metric=SEARCH_METRICS,
        mode=["min", "min"],
        sampler=sampler,
    )


def leaves(tree: dict, prefix: str = "") -> dict:
    """``{"space": {"keep_min": 0.5}}`` -> ``{"space.keep_min": 0.5}`` (lists stay whole)."""
    flat = {}
    for key, value in tree.items():
        flat |= leaves(value, f"{prefix}{key}.") if isinstance(value, dict) else {f"{prefix}{key}": value}
    return flat


def check_stored(storage: Path, fingerprint: dict, on_change: str = "error") -> None:
    """Stamp the store with this search; trials stored for another one raise or are discarded.

    ``on_change``: "error" (the CLI: the user decides) or "restart" (a pipeline stage, whose
    outputs must follow its params).
    """
    stamp = storage / "space.json"
    fingerprint = json.loads(json.dumps(fingerprint))  # as it reads back: tuples become lists
    if stamp.is_file():
        stored, now = leaves(json.loads(stamp.read_text())), leaves(fingerprint)
        changed = sorted(k for k in {*stored, *now} if stored.get(k) != now.get(k))
        if changed and on_change == "restart":
            shutil.rmtree(storage)
        elif changed:
            raise CoFormerError(
                f"the trials stored in {storage} were made for another search (differs in: {', '.join(changed)}); "
                "use another output folder or --fresh to start over"
            )
    storage.mkdir(parents=True, exist_ok=True)
    stamp.write_text(json.dumps(fingerprint, indent=1, sort_keys=True))


def collect(grid, experiment: str) -> list[dict]:
    """One row per trial, in the order the searcher proposed them: experiment, trial, params, metrics."""
    rows = []
    for result in sorted(grid, key=proposal_number):
        row = {"experiment": experiment, "trial_id": Path(result.path).name, "params": result.config}
        row |= {k: v for k, v in (result.metrics or {}).items() if k not in RAY_KEYS}
        if result.error is not None:
            row |= {"feasible": False, "reason": f"error: {type(result.error).__name__}: {result.error}"[:300]}
        rows.append(row)
    return rows


def run_trials(
    space: SearchSpace, evaluator: Evaluator, storage: Path, fresh: bool = False, on_change: str = "error", progress: bool = False
) -> list[dict]:
    """Every stored trial plus new ones until ``space.config.trials`` are done; rows in proposal order.

    ``fresh`` discards stored trials; ``on_change`` says what to do with trials of another search.
    """
    config = space.config
    storage = storage.resolve()
    if fresh and storage.exists():
        shutil.rmtree(storage)
    fingerprint = {"space": config.fingerprint(), "fleet": space.fleet.model_dump(), "shape": space.shape.model_dump()}
    check_stored(storage, fingerprint, on_change)
    trainable = tune.with_parameters(trial, space=space, evaluator=evaluator)
    experiments = sorted(p for p in storage.glob(f"{config.sampler}-*") if tune.Tuner.can_restore(p))
    rows: list[dict] = []
    with ray_session(config.concurrency, config.ray_address):
        for path in experiments:
            tuner = tune.Tuner.restore(str(path), trainable=trainable, resume_unfinished=True, restart_errored=True)
            rows += collect(tuner.fit(), path.name)
        remaining = config.trials - len(rows)
        if remaining > 0:
            searcher = make_searcher(space)
            if experiments:
                searcher.restore_from_dir(str(experiments[-1]))
            name = f"{config.sampler}-{len(experiments):03d}"
            tuner = tune.Tuner(
                trainable,
                tune_config=tune.TuneConfig(
                    search_alg=ConcurrencyLimiter(searcher, max_concurrent=config.concurrency),
                    num_samples=remaining,
                    max_concurrent_trials=config.concurrency,
                    reuse_actors=True,
                    trial_dirname_creator=trial_dirname,
                ),
                run_config=tune.RunConfig(
                    storage_path=str(storage),
                    name=name,
                    verbose=0,
                    sync_config=tune.SyncConfig(sync_period=SYNC_PERIOD_S),
                    callbacks=[TrialProgress(len(rows), config.trials)] if progress else [],
                ),
            )
            rows += collect(tuner.fit(), name)
    return rows
