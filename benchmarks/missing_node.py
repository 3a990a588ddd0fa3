"""What a missing node costs, with and without calibration for it (``calibrate.device_dropout``).

The embedded MiniLM at s = 0 in N equal sub-models (N = 2 by default) is calibrated twice with the
same shortened recipe (the ``calibrate:`` section of params.yaml with ``--steps`` per alignment
stage and 3x that in the final stage, one core per run): once as params.yaml says, once with
``device_dropout`` (``--dropout``), which leaves one random device out of that share of the final
stage's steps and trains the merge's learned correction for a missing stream. For both it prints
the teacher-relative cosine of held-out sentence embeddings with the full fleet and with each
single device missing (the serving layer's degraded mode: ``Aggregator.merge`` with ``None`` for
the device that did not answer), and the cost of the option on the full-fleet cosine.

    nice -n 5 .venv/bin/python benchmarks/missing_node.py                 # N = 2
    .venv/bin/python benchmarks/missing_node.py --devices 3 --steps 40
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

from coformer.calibrate import CalibrationConfig, CalibrationData, build_student, calibrate  # noqa: E402
from coformer.data import load_pairs, load_texts  # noqa: E402
from coformer.decompose import DeviceShare, build_policy, compute_importance, shape_of  # noqa: E402
from coformer.evaluation import encode_pairs  # noqa: E402
from coformer.executor import Teacher  # noqa: E402
from coformer.loading import load_model  # noqa: E402
from coformer.params import load_params  # noqa: E402

PARAMS = Path(__file__).resolve().parents[1] / "params.yaml"
EVAL_PAIRS = 300  # held-out (summary, body) pairs
EVAL_MAX_LENGTH = 128


def embed(model, tokenizer, pairs, present=None) -> torch.Tensor:
    """Held-out summaries' and bodies' embeddings, ``present`` saying which devices answer: (2n, d)."""
    encoder = (lambda batch: model(batch).output) if present is None else (lambda batch: model(batch, present=present).output)
    return torch.cat(encode_pairs(encoder, tokenizer, pairs, EVAL_MAX_LENGTH))


def bench(n: int, config: CalibrationConfig) -> dict:
    """Calibrate N sub-models with ``config`` in this process; held-out cosines full and one device missing."""
    torch.set_num_threads(1)
    for name in ("lightning.pytorch", "mlflow"):
        logging.getLogger(name).setLevel(logging.WARNING)
    loaded = load_model()
    canonical, tokenizer = loaded.canonical, loaded.processor
    teacher = Teacher(canonical.body, canonical.head).eval().requires_grad_(False)
    pairs = load_pairs("evaluation", limit=EVAL_PAIRS)
    reference = embed(teacher, tokenizer, pairs)
    shares = [DeviceShare(name=f"device{k}", heads=1, neurons=1) for k in range(n)]
    policy = build_policy(shape_of(canonical), compute_importance(canonical.body, "magnitude"), shares, sync=0)
    student = build_student(canonical, policy)
    data = CalibrationData.from_texts(tokenizer, load_texts(split="calibration", seed=config.seed), config.batch_size, config.max_length, config.seed)
    start = time.time()
    with tempfile.TemporaryDirectory() as out:
        calibrate(teacher, student, policy, data, config, out, tracking_uri=None, progress=False)
    student.eval()

    def cosine(present=None) -> float:
        with torch.no_grad():
            return float(torch.nn.functional.cosine_similarity(embed(student, tokenizer, pairs, present), reference, dim=-1).mean())

    row = {"dropout": config.device_dropout, "seconds": time.time() - start, "full": cosine()}
    for k in range(n):
        row[f"without device{k}"] = cosine([j != k for j in range(n)])
    print(f"N={n} device_dropout={config.device_dropout}: {row}", flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", type=int, default=2, help="sub-models N")
    parser.add_argument("--steps", type=int, default=60, help="steps per alignment stage; the final stage gets 3x")
    parser.add_argument("--dropout", type=float, default=0.3, help="device_dropout of the calibrated-for-it run")
    parser.add_argument("--jobs", type=int, default=2, help="calibrations at once, one core each")
    args = parser.parse_args()
    base = load_params(PARAMS).calibrate.model_copy(
        update={"steps_per_stage": args.steps, "final_steps": 3 * args.steps, "threads": 1, "checkpoint_every": 0}
    )
    configs = [base.model_copy(update={"device_dropout": rate}) for rate in (0.0, args.dropout)]
    wall = time.time()
    with ProcessPoolExecutor(args.jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        rows = list(pool.map(bench, [args.devices] * 2, configs))
    print(f"\nMiniLM, N={args.devices}, s=0, {args.steps}x3 + {3 * args.steps} steps (shortened recipe), held-out cosine vs teacher:")
    columns = [c for c in rows[0] if c not in ("dropout", "seconds")]
    print(f"{'device_dropout':>14} " + " ".join(f"{c:>17}" for c in columns) + f" {'time':>6}")
    for r in rows:
        print(f"{r['dropout']:>14g} " + " ".join(f"{r[c]:>17.4f}" for c in columns) + f" {r['seconds']:>5.0f}s")
    worst = [min(r[c] for c in columns if c != "full") for r in rows]
    print(f"worst single-device-missing cosine: {worst[0]:.4f} -> {worst[1]:.4f}; full-fleet cost {rows[1]['full'] - rows[0]['full']:+.4f}")
    print(f"wall time {time.time() - wall:.0f} s")


if __name__ == "__main__":
    main()
