"""Does the search's degradation rank policies the way calibration does?

Eight decomposition policies of the embedded MiniLM (1-4 devices with equal shares, s in {0, 1, 2},
kept fractions 0.5-1) are each calibrated with the same shortened recipe (the ``calibrate:``
section of params.yaml with ``--steps`` per alignment stage and 3x that in the final stage, one
core per job); their calibrated degradation is ``1 - cosine`` of held-out sentence embeddings
against the teacher's. Beside it, the search's cheap estimates of every policy on the search's own
texts (``search.texts`` / ``search.fit_texts``): the uncalibrated ``D``, ``D`` after the
least-squares refit (``search.degradation: refit``, the default) and, with ``--warm-start``, after
the full least-squares warm start. Prints the table and the Spearman rank correlation of each estimate
with the calibrated degradation.

    nice -n 5 .venv/bin/python benchmarks/search_validation.py              # ~15 min on 2 cores
    .venv/bin/python benchmarks/search_validation.py --steps 20 --jobs 1
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing
import os
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

from coformer.calibrate import CalibrationConfig, CalibrationData, build_student, calibrate  # noqa: E402
from coformer.data import calibration_batches, load_pairs, load_texts  # noqa: E402
from coformer.decompose import DeviceShare  # noqa: E402
from coformer.evaluation import encode_pairs  # noqa: E402
from coformer.executor import Teacher  # noqa: E402
from coformer.fleet.profile import load_fleet  # noqa: E402
from coformer.loading import load_model  # noqa: E402
from coformer.params import load_params  # noqa: E402
from coformer.search import SearchConfig  # noqa: E402
from coformer.search.evaluate import Evaluator  # noqa: E402
from coformer.search.space import Candidate, method  # noqa: E402

PARAMS = Path(__file__).resolve().parents[1] / "params.yaml"
EVAL_PAIRS = 200  # held-out (summary, body) pairs the calibrated students are scored on
EVAL_MAX_LENGTH = 128
# (devices, kept fraction rho, sync s, residual channels kept) — every method, 1-4 devices
POLICIES = [
    (1, 0.5, 1, 1.0),
    (1, 0.75, 1, 1.0),
    (2, 1.0, 0, 1.0),
    (2, 0.6, 1, 1.0),
    (3, 1.0, 0, 1.0),
    (3, 0.8, 2, 1.0),
    (4, 1.0, 0, 1.0),
    (4, 0.6, 2, 0.75),
]


def held_out_cosine(model, tokenizer, pairs, reference) -> float:
    """Mean teacher-relative cosine of the held-out summaries' and bodies' embeddings."""
    queries, documents = encode_pairs(lambda batch: model(batch).output, tokenizer, pairs, EVAL_MAX_LENGTH)
    return float(torch.nn.functional.cosine_similarity(torch.cat([queries, documents]), reference, dim=-1).mean())


def bench(spec: tuple, recipe: CalibrationConfig, search: SearchConfig, estimates: tuple[str, ...]) -> dict:
    """One policy in its own process: the search's estimates, then the shortened calibration."""
    torch.set_num_threads(1)
    for name in ("lightning.pytorch", "mlflow"):
        logging.getLogger(name).setLevel(logging.WARNING)
    devices, keep, sync, channels = spec
    loaded = load_model()
    canonical, tokenizer = loaded.canonical, loaded.processor
    batches = calibration_batches(tokenizer, canonical.config, n=search.texts, batch_size=search.texts, max_length=search.max_length)
    fleet = load_fleet("default")  # only names the devices: D does not depend on the fleet
    shares = tuple(DeviceShare(name=n, heads=1, neurons=1, channels=channels) for n in fleet.names[:devices])
    candidate = Candidate(shares, keep, sync, "balanced")
    row = {"method": method(devices, sync), "devices": devices, "keep": keep, "sync": sync, "channels": channels}
    for estimate in estimates:
        start = time.time()
        evaluator = Evaluator(canonical, batches, fleet, search.model_copy(update={"degradation": estimate}))
        policy = evaluator.policy(candidate)
        row["D_uncalibrated"], row[f"D_{estimate}"] = evaluator.degradation(policy)
        row[f"{estimate}_s"] = time.time() - start
    teacher = Teacher(canonical.body, canonical.head).eval().requires_grad_(False)
    pairs = load_pairs("evaluation", limit=EVAL_PAIRS)
    reference = torch.cat(encode_pairs(lambda batch: teacher(batch).output, tokenizer, pairs, EVAL_MAX_LENGTH))
    texts = load_texts(split="calibration", seed=recipe.seed)
    data = CalibrationData.from_texts(tokenizer, texts, recipe.batch_size, recipe.max_length, recipe.seed)
    student = build_student(canonical, policy)
    start = time.time()
    with tempfile.TemporaryDirectory() as out:
        calibrate(teacher, student, policy, data, recipe, out, tracking_uri=None, progress=False)
    row["calibrate_s"] = time.time() - start
    row["D_calibrated"] = 1 - held_out_cosine(student.eval(), tokenizer, pairs, reference)
    print(f"{row['method']} N={devices} rho={keep} s={sync} ch={channels}: calibrated D {row['D_calibrated']:.4f}", flush=True)
    return row


def spearman(a: pd.Series, b: pd.Series) -> float:
    return float(np.corrcoef(a.rank(), b.rank())[0, 1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=20, help="steps per alignment stage; the final stage gets 3x")
    parser.add_argument("--warm-start", action="store_true", help="also estimate D after the full least-squares warm start")
    parser.add_argument("--jobs", type=int, default=2, help="policies calibrated at once, one core each")
    parser.add_argument("--policies", type=int, default=len(POLICIES), help="only the first N policies (a smoke run)")
    args = parser.parse_args()
    policies = POLICIES[: args.policies]
    params = load_params(PARAMS)
    recipe = params.calibrate.model_copy(
        update={"steps_per_stage": args.steps, "final_steps": 3 * args.steps, "threads": 1, "checkpoint_every": 0}
    )
    search = params.search
    wall = time.time()
    print(f"recipe: {recipe.steps_per_stage} steps per stage, {recipe.final_steps} final, batch {recipe.batch_size}", flush=True)
    with ProcessPoolExecutor(args.jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        estimates = ("refit", "warm-start") if args.warm_start else ("refit",)
        rows = list(pool.map(bench, policies, *zip(*[(recipe, search, estimates)] * len(policies))))
    table = pd.DataFrame(rows)
    print("\n" + table.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    truth = table["D_calibrated"]
    print(f"\nSpearman rank correlation with the calibrated degradation ({len(table)} policies):")
    print(f"  (a) uncalibrated D:               {spearman(table['D_uncalibrated'], truth):+.3f}")
    print(f"  (b) D after the refit (default):  {spearman(table['D_refit'], truth):+.3f}")
    if args.warm_start:
        print(f"      D after the full warm start:  {spearman(table['D_warm-start'], truth):+.3f}")
    print(f"refit estimate per policy {table['refit_s'].mean():.1f} s (incl. unit ranking and teacher); wall time {time.time() - wall:.0f} s")


if __name__ == "__main__":
    main()
