"""Stage ``calibrate``: DeBo stage 2, progressive calibration of a decomposition against the original."""

from __future__ import annotations

import csv
import json
import logging
import time
from pathlib import Path

from coformer.calibrate import CalibrationData, calibrate, load_student
from coformer.calibrate.student import AGGREGATOR, DEVICES, POLICY
from coformer.evaluation.quality import BY_DEFINITION, quality, quality_batch_size
from coformer.executor import Teacher
from coformer.loading import load_model
from coformer.params import Params
from coformer.stages.inputs import read_prepared
from coformer.tracking import log_outputs, mlflow_key, register, stage_run

METRICS, CURVE = "metrics.json", "curve.csv"


def prefixed(prefix: str, metrics: dict[str, float]) -> dict[str, float]:
    return {f"{prefix}_{k}": v for k, v in metrics.items()}


def write_curve(path: Path, curve: list[dict]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["step", "stage", "loss"])
        writer.writeheader()
        writer.writerows(curve)


def run(params: Params, prepared: Path | None, decomposed: Path, out: Path) -> dict:
    """Calibrate the decomposition in ``decomposed`` (policy.json [+ devices/, aggregator/]) into
    ``out``: policy.json, devices/, aggregator/, metrics.json, curve.csv and stages/ (resume state).

    Changed parameters or another policy start over; the same ones resume a killed run. The
    calibrated sub-models and aggregator become new versions of the registered models.
    """
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    config, data = params.calibrate, params.data
    loaded = load_model(params.base.model)
    canonical, processor = loaded.canonical, loaded.processor
    prepared = read_prepared(prepared, params, canonical)
    policy, student = load_student(decomposed, canonical)
    teacher = Teacher(canonical.body, canonical.head).eval().requires_grad_(False)
    limit = canonical.config.max_tokens
    train = CalibrationData.from_prepared(prepared, processor, config.batch_size, min(config.max_length, limit or config.max_length), config.seed)
    eval_length = min(data.max_length, limit or data.max_length)
    held = prepared.batches(processor, "evaluation", quality_batch_size(canonical.head.config), eval_length, by_length=True)
    with stage_run(params, "calibrate") as run:
        metrics = prefixed("before", quality(teacher, student, processor, held, prepared.pairs, eval_length))
        own = quality(teacher, teacher, processor, held, prepared.pairs, eval_length)  # recall, LM perplexity: the reference
        metrics |= prefixed("teacher", {k: v for k, v in own.items() if k not in BY_DEFINITION})
        print(f"calibrate: {len(student.submodels)} sub-models (s={policy.sync}), {len(prepared.splits['calibration'])} inputs, "
              f"before {metrics}", flush=True)  # fmt: skip
        start = time.time()
        result = calibrate(
            teacher, student, policy, train, config, out, params.base.tracking_uri, params.base.experiment,
            run_id=run.info.run_id, restart_on_change=True,
        )  # fmt: skip
        if result.resumed:
            print(f"calibrate: resumed after stage(s) {', '.join(result.resumed)}", flush=True)
        metrics |= prefixed("after", quality(teacher, student, processor, held, prepared.pairs, eval_length))
        metrics["seconds"] = time.time() - start
        (out / METRICS).write_text(json.dumps(metrics, indent=1))
        write_curve(out / CURVE, result.curve)
        log_outputs(metrics, [out / METRICS, out / CURVE])
        shared = [out / POLICY, out / METRICS]
        roles = {f"device-{d.name}": [out / DEVICES / d.name, *shared] for d in policy.devices}
        tags = {"sync": str(policy.sync), "devices": str(len(policy.devices))} | {mlflow_key(k): f"{v:.4f}" for k, v in metrics.items()}
        versions = register(params, roles | {"aggregator": [out / AGGREGATOR, *shared]}, tags)
    print(f"calibrate: after {metrics} -> {out}; registered {versions}", flush=True)
    return metrics
