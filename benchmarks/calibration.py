"""Benchmark of DeBo stage 2 on the embedded default: progressive calibration vs one-shot distillation.

all-MiniLM-L6-v2 decomposed at s = 0 into N equal sub-models (N = 2 and 3 by default), calibrated
on the calibration split of the embedded docstring corpus with the ``calibrate:`` section of
params.yaml (overridable with --set). On the held-out split (the evaluation pairs' summaries and
bodies) it prints the teacher-relative cosine of sentence embeddings before and after calibration,
retrieval recall@1/@5 of teacher and student, and the ablation "one-shot output distillation
with the same total steps" beside the progressive schedule, with wall times.

Every (N, schedule) pair runs in its own process with one torch thread (``--jobs`` at a time),
so the two cores of a small box work on two calibrations at once instead of fighting over one.

    .venv/bin/python benchmarks/calibration.py                  # the acceptance run (N = 2 and 3)
    .venv/bin/python benchmarks/calibration.py --devices 2 --set final_steps=400 lr=5e-4
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

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from coformer.calibrate import CalibrationConfig, CalibrationData, build_student, calibrate, plan  # noqa: E402
from coformer.data import load_pairs, load_texts  # noqa: E402
from coformer.decompose import DeviceShare, build_policy, compute_importance, shape_of  # noqa: E402
from coformer.evaluation import encode_pairs, recall_at_k  # noqa: E402
from coformer.executor import Teacher  # noqa: E402
from coformer.loading import load_model  # noqa: E402
from coformer.params import load_params  # noqa: E402

EVAL_MAX_LENGTH = 128  # held-out texts are embedded as the pipeline embeds them (data.max_length)
PARAMS = Path(__file__).resolve().parents[1] / "params.yaml"


def held_out(model, tokenizer, pairs) -> dict[str, torch.Tensor]:
    """Sentence embeddings of the evaluation summaries and bodies: (n, d) each."""
    queries, documents = encode_pairs(lambda batch: model(batch).output, tokenizer, pairs, EVAL_MAX_LENGTH)
    return {"queries": queries, "documents": documents}


def score(embeddings: dict, reference: dict | None) -> dict[str, float]:
    """recall@1/@5 of the embeddings and, given the teacher's, their mean teacher-relative cosine."""
    recall = recall_at_k(embeddings["queries"], embeddings["documents"], (1, 5))
    row = {"r@1": recall[1], "r@5": recall[5]}
    if reference is not None:
        both = torch.cat([embeddings["queries"], embeddings["documents"]])  # (2n, d)
        ref = torch.cat([reference["queries"], reference["documents"]])
        row["cosine"] = float(F.cosine_similarity(both, ref, dim=-1).mean())
    return row


def one_shot(config: CalibrationConfig, num_layers: int) -> CalibrationConfig:
    """The ablation: output distillation alone, for as many steps as the progressive schedule takes."""
    total = sum(s.steps for s in plan(num_layers, config))
    return config.model_copy(update={"warm_start": False, "steps_per_stage": 0, "final_steps": total})


def bench(n: int, schedule: str, config: CalibrationConfig, limit: int | None) -> list[dict]:
    """Rows for N = n sub-models under one schedule, in its own process: the teacher and the
    uncalibrated student with the progressive job, then the calibrated student."""
    torch.set_num_threads(config.threads or torch.get_num_threads())
    for name in ("lightning.pytorch", "mlflow"):
        logging.getLogger(name).setLevel(logging.WARNING)
    loaded = load_model()
    canonical, tokenizer = loaded.canonical, loaded.processor
    teacher = Teacher(canonical.body, canonical.head).eval().requires_grad_(False)
    pairs = load_pairs("evaluation")
    texts = load_texts(split="calibration", limit=limit, seed=config.seed)
    data = CalibrationData.from_texts(tokenizer, texts, config.batch_size, config.max_length, config.seed)
    reference = held_out(teacher, tokenizer, pairs)
    shares = [DeviceShare(name=f"device{k}", heads=1, neurons=1) for k in range(n)]
    policy = build_policy(shape_of(canonical), compute_importance(canonical.body, "magnitude"), shares, sync=0)
    student = build_student(canonical, policy)
    rows = []
    if schedule == "progressive":
        before = score(held_out(student, tokenizer, pairs), reference)
        rows += [{"n": n, "schedule": "teacher", **score(reference, None)}, {"n": n, "schedule": "before", **before}]
    L = canonical.config.num_layers
    cfg = config if schedule == "progressive" else one_shot(config, L)
    tracking = f"sqlite:///{tempfile.mkdtemp(prefix='calib-mlflow-')}/mlflow.db"
    start = time.time()
    with tempfile.TemporaryDirectory() as out:
        result = calibrate(teacher, student, policy, data, cfg, out, tracking, run_name=f"N{n}-{schedule}", progress=False)
    seconds = time.time() - start
    steps = sum(s.steps for s in plan(L, cfg))
    rows.append({"n": n, "schedule": schedule, "steps": steps, "seconds": seconds, **score(held_out(student.eval(), tokenizer, pairs), reference)})
    print(f"N={n} {schedule}: {steps} steps in {seconds:.0f} s, stages {' '.join(result.stages)}", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", type=int, nargs="+", default=[2, 3], help="sub-model counts N to benchmark")
    parser.add_argument("--ablation", action=argparse.BooleanOptionalAction, default=True, help="also run one-shot distillation")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="override calibrate parameters, e.g. lr=5e-4 (params.yaml's calibrate section)")
    parser.add_argument("--limit", type=int, default=None, help="calibration texts used (default: the whole split)")
    parser.add_argument("--jobs", type=int, default=2, help="calibrations run at once, one process and one core each")
    args = parser.parse_args()
    wall = time.time()
    config = load_params(PARAMS if PARAMS.is_file() else None, [f"calibrate.{item}" for item in args.set]).calibrate
    schedules = ["progressive", "one-shot"] if args.ablation else ["progressive"]
    if args.jobs > 1:
        config = config.model_copy(update={"threads": 1})  # one core per job
    print(f"calibrate parameters: {config.model_dump(exclude={'accelerator', 'strategy', 'devices'})}", flush=True)
    jobs = [(n, schedule, config, args.limit) for n in args.devices for schedule in schedules]
    with ProcessPoolExecutor(min(args.jobs, len(jobs)), mp_context=multiprocessing.get_context("spawn")) as pool:
        results = list(pool.map(bench, *zip(*jobs)))
    print(f"\n{'N':>2} {'model':<12} {'steps':>5} {'cosine':>7} {'recall@1':>8} {'recall@5':>8} {'time':>6}")
    for rows in results:
        for r in rows:
            cosine = f"{r['cosine']:.4f}" if "cosine" in r else "1"
            time_ = f"{r['seconds']:.0f}s" if "seconds" in r else ""
            print(f"{r['n']:>2} {r['schedule']:<12} {r.get('steps', ''):>5} {cosine:>7} {r['r@1']:>8.3f} {r['r@5']:>8.3f} {time_:>6}")
    print(f"held-out pairs: {len(load_pairs('evaluation'))}; wall time {time.time() - wall:.0f} s")


if __name__ == "__main__":
    main()
