"""DVC stage `calibrate`: DeBo stage 2, progressive calibration of the searched decomposition.

Reads `base` and `calibrate` from params.yaml (and `data` for the texts), the policy the
`search` stage wrote to outputs/search/, and writes outputs/calibrate/: policy.json, devices/,
aggregator/ (safetensors + JSON), metrics.json (fidelity before/after on the held-out split,
retrieval recall of teacher and student for the embedded corpus) and curve.csv (step,stage,loss).
Training is logged to MLflow by Lightning's MLFlowLogger; the metrics join the same run. A killed
run resumes from its last completed stage (outputs/calibrate/stages/); a run with changed
parameters or another policy starts over.
"""

from __future__ import annotations

import csv
import json
import logging
import time
from pathlib import Path

from pipelines.common import load_params, run_stage

from coformer.calibrate import CalibrationConfig, CalibrationData, calibrate, load_student
from coformer.data import load_pairs, load_texts, text_batches
from coformer.evaluation import output_fidelity, retrieval_recall
from coformer.executor import Teacher
from coformer.loading import load_model

SEARCH = Path("outputs/search")
OUT = Path("outputs/calibrate")


def quality(teacher, student, tokenizer, batches, pairs, max_length: int, prefix: str) -> dict[str, float]:
    student.eval()
    metrics = {f"{prefix}_{k}": v for k, v in output_fidelity(teacher, student, batches).items()}
    if pairs:
        recall = retrieval_recall(lambda b: student(b).output, tokenizer, pairs, (1, 5), max_length)
        metrics |= {f"{prefix}_recall@{k}": v for k, v in recall.items()}
    return metrics


def main() -> None:
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    base, data, section = load_params("calibrate")
    config = CalibrationConfig.parse({**section, "seed": base["seed"]})
    source, eval_length, eval_limit = data.get("source", "builtin"), data.get("max_length", 128), data.get("eval_limit")
    loaded = load_model(base["model"])
    canonical, tokenizer = loaded.canonical, loaded.processor
    policy, student = load_student(SEARCH, canonical)
    teacher = Teacher(canonical.body, canonical.head).eval().requires_grad_(False)
    texts = load_texts(source, "calibration", seed=base["seed"])
    data = CalibrationData.from_texts(tokenizer, texts, config.batch_size, config.max_length, config.seed)
    held = text_batches(tokenizer, sorted(load_texts(source, "evaluation", limit=eval_limit, seed=base["seed"]), key=len), 64, eval_length)
    pairs = load_pairs("evaluation", limit=eval_limit) if source == "builtin" and canonical.head.config.pooling != "none" else []
    metrics = quality(teacher, student, tokenizer, held, pairs, eval_length, "before")
    if pairs:
        teacher_recall = retrieval_recall(lambda b: teacher(b).output, tokenizer, pairs, (1, 5), eval_length)
        metrics |= {f"teacher_recall@{k}": v for k, v in teacher_recall.items()}
    print(f"calibrate: {len(student.submodels)} sub-models (s={policy.sync}), {len(texts)} texts, before {metrics}", flush=True)
    start = time.time()
    # A changed parameter or policy (dvc exp run -S ...) starts over; the same ones resume a killed run.
    result = calibrate(teacher, student, policy, data, config, OUT, base["tracking_uri"], base["experiment"], restart_on_change=True)
    metrics |= quality(teacher, student, tokenizer, held, pairs, eval_length, "after")
    metrics["seconds"] = time.time() - start
    (OUT / "metrics.json").write_text(json.dumps(metrics, indent=1))
    with open(OUT / "curve.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["step", "stage", "loss"])
        writer.writeheader()
        writer.writerows(result.curve)
    if result.run_id:
        import mlflow

        client = mlflow.MlflowClient(base["tracking_uri"])
        for key, value in metrics.items():
            client.log_metric(result.run_id, key.replace("@", "_at_"), value)
    print(f"calibrate: after {metrics} -> {OUT}", flush=True)


if __name__ == "__main__":
    run_stage(main)
