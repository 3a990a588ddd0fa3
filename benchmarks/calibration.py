"""Benchmark of DeBo stage 2 on the embedded default: progressive calibration vs one-shot distillation.

all-MiniLM-L6-v2 decomposed at s = 0 into N equal sub-models (N = 2 and 3 by default), calibrated
on the calibration split of the embedded docstring corpus. On the held-out split (the evaluation
pairs' summaries and bodies) it prints the teacher-relative cosine of sentence embeddings before
and after calibration, retrieval recall@1/@5 of teacher and student, and the ablation "one-shot
output distillation with the same total steps" beside the progressive schedule.

    .venv/bin/python benchmarks/calibration.py              # the acceptance run (2 and 3 sub-models)
    .venv/bin/python benchmarks/calibration.py --devices 2 --no-ablation
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
import time

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from coformer.calibrate import CalibrationConfig, CalibrationData, build_student, calibrate  # noqa: E402
from coformer.data import load_pairs, load_texts  # noqa: E402
from coformer.decompose import DeviceShare, build_policy, compute_importance, shape_of  # noqa: E402
from coformer.evaluation import encode, recall_at_k  # noqa: E402
from coformer.executor import Teacher  # noqa: E402
from coformer.loading import load_model  # noqa: E402

EVAL_MAX_LENGTH = 128  # held-out texts are embedded as the pipeline does (prepare.max_length)


def held_out(model, tokenizer, pairs) -> dict:
    """Sentence embeddings of the evaluation summaries and bodies: (n, d) each."""
    encoder = lambda batch: model(batch).output  # noqa: E731
    return {
        "queries": encode(encoder, tokenizer, [p.query for p in pairs], max_length=EVAL_MAX_LENGTH),
        "documents": encode(encoder, tokenizer, [p.document for p in pairs], max_length=EVAL_MAX_LENGTH),
    }


def score(embeddings: dict, reference: dict | None) -> dict:
    recall = recall_at_k(embeddings["queries"], embeddings["documents"], (1, 5))
    row = {"r@1": recall[1], "r@5": recall[5]}
    if reference is not None:
        both = torch.cat([embeddings["queries"], embeddings["documents"]])
        ref = torch.cat([reference["queries"], reference["documents"]])
        row["cosine"] = float(F.cosine_similarity(both, ref, dim=-1).mean())
    return row


def run(label, canonical, teacher, policy, data, config, tokenizer, pairs, reference, tracking_uri) -> dict:
    student = build_student(canonical, policy)
    start = time.time()
    with tempfile.TemporaryDirectory() as out:
        result = calibrate(teacher, student, policy, data, config, out, tracking_uri, run_name=label, progress=False)
    seconds = time.time() - start
    student.eval()
    row = score(held_out(student, tokenizer, pairs), reference)
    stage_losses = {}
    for r in result.curve:
        stage_losses.setdefault(r["stage"], []).append(r["loss"])
    ends = ", ".join(f"{s} {sum(v[-10:]) / len(v[-10:]):.4f}" for s, v in stage_losses.items())
    print(f"  {label}: {seconds:.0f} s, final losses: {ends}", flush=True)
    return row | {"seconds": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", type=int, nargs="+", default=[2, 3], help="sub-model counts to benchmark")
    parser.add_argument("--ablation", action=argparse.BooleanOptionalAction, default=True, help="also run one-shot distillation")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="calibrate parameters, e.g. lr=5e-4")
    parser.add_argument("--limit", type=int, default=None, help="calibration texts used (default: all)")
    args = parser.parse_args()
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    wall = time.time()
    overrides = dict(item.split("=", 1) for item in args.set)
    config = CalibrationConfig.parse(overrides)
    torch.set_num_threads(config.threads or torch.get_num_threads())
    loaded = load_model()
    canonical, tokenizer = loaded.canonical, loaded.processor
    teacher = Teacher(canonical.body, canonical.head).eval().requires_grad_(False)
    pairs = load_pairs("evaluation")
    texts = load_texts(split="calibration", limit=args.limit, seed=config.seed)
    data = CalibrationData.from_texts(tokenizer, texts, config.batch_size, config.max_length, config.seed)
    reference = held_out(teacher, tokenizer, pairs)
    teacher_row = score(reference, None)
    importance = compute_importance(canonical.body, "magnitude")
    stages = len(range(0, canonical.config.num_layers, config.group_size))
    total = stages * config.steps_per_stage + config.final_steps
    one_shot = config.model_copy(update={"steps_per_stage": 0, "final_steps": total})
    tracking = f"sqlite:///{tempfile.mkdtemp()}/mlflow.db"
    print(
        f"calibration texts {len(texts)} in {len(data.batches)} batches, held-out pairs {len(pairs)}; "
        f"schedule: {stages} x {config.steps_per_stage} + {config.final_steps} steps of batch {config.batch_size}, "
        f"lr {config.lr}, max_length {config.max_length}; one-shot: {total} steps",
        flush=True,
    )
    rows = []
    for n in args.devices:
        shares = [DeviceShare(name=f"device{k}", heads=1, neurons=1) for k in range(n)]
        policy = build_policy(shape_of(canonical), importance, shares, sync=0)
        before = score(held_out(build_student(canonical, policy), tokenizer, pairs), reference)
        print(f"N={n}: before cosine {before['cosine']:.4f}, r@1 {before['r@1']:.3f}", flush=True)
        runs = {"progressive": config} | ({"one-shot": one_shot} if args.ablation else {})
        for name, cfg in runs.items():
            after = run(f"N{n}-{name}", canonical, teacher, policy, data, cfg, tokenizer, pairs, reference, tracking)
            rows.append((n, name, before, after))
    print()
    print(f"teacher: recall@1 {teacher_row['r@1']:.3f}, recall@5 {teacher_row['r@5']:.3f} ({len(pairs)} held-out pairs)")
    print(f"{'N':>2} {'schedule':<12} {'steps':>5} {'cos before':>10} {'cos after':>9} {'r@1':>6} {'r@5':>6} {'dr@1':>6} {'time':>6}")
    for n, name, before, after in rows:
        steps = total
        print(
            f"{n:>2} {name:<12} {steps:>5} {before['cosine']:>10.4f} {after['cosine']:>9.4f} {after['r@1']:>6.3f} "
            f"{after['r@5']:>6.3f} {after['r@1'] - teacher_row['r@1']:>+6.3f} {after['seconds']:>5.0f}s"
        )
    print(f"wall time {time.time() - wall:.0f} s")


if __name__ == "__main__":
    main()
