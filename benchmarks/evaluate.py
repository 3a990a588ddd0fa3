"""Every method as real device processes on this machine, beside the cost model: the evaluate
stage as a command that prints its tables.

    python benchmarks/evaluate.py [--calibrated outputs/calibrate] [--profile outputs/profile/device.json]
                                  [--fleet default] [--out outputs/benchmark-evaluate] [--set key=value ...]

Defaults: the embedded MiniLM, one device process per core, the ``evaluate:`` and ``calibrate:``
sections of params.yaml (``--set requests=30 shaped_batch=8`` overrides evaluate keys, ``--set
base.model=gpt2 data.eval_limit=64`` any other section's; an LM is scored by perplexity and KL,
a classifier by top-1 agreement with the teacher and KL). Without a
calibrated folder there is no searched-policy row and the baselines are calibrated at the params'
budget (latency does not depend on calibration). Targets checked and printed as measured:
CoFormer s=0 speed-up over the full model >= 1.6x at the largest batch; per-device parameter
bytes <= 0.6x the full model's with the embedding at a gateway; at the slowest shaped link,
CoFormer s=0 at least 3x faster than tensor parallelism.
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from coformer.evaluation import run_evaluation
from coformer.errors import ArtifactError
from coformer.evaluation.methods import PAPER, searched_policy
from coformer.evaluation.summary import series_key
from coformer.loading import load_model
from coformer.params import load_params
from coformer.stages.inputs import read_prepared

ROOT = Path(__file__).resolve().parents[1]
console = Console(width=200)


def methods_table(metrics: dict) -> Table:
    table = Table(title="measured per method (median of the timed requests; predicted = cost model on this machine's core profile)")
    scores = metrics["scores"]
    for column in ("method", "series", "latency ms", "p90 ms", "predicted ms (err)", "compute / comm ms", "seq/s", "sent/device", *scores):
        table.add_column(column, justify="left" if column in ("method", "series") else "right")
    for row in metrics["series"]:
        q = metrics["methods"][row["method"]]
        measured = row["measured"]
        predicted = "-" if row.get("predicted_ms") is None else f"{row['predicted_ms']:,.1f}" + (f" ({row['prediction_error']:+.0%})" if measured else " (predicted)")
        table.add_row(
            PAPER[row["method"]], series_key(row),
            f"{row['latency_ms']:,.1f}" if measured else "-", f"{row['p90_ms']:,.1f}" if measured else "-", predicted,
            f"{row['compute_ms']:,.0f} / {row['comm_ms']:,.0f}" if measured else "-",
            f"{row['throughput_seq_s']:.1f}" if measured else "-", f"{row['bytes_per_device'] / 1e6:.2f} MB" if measured else "-",
            *(f"{q.get(score, float('nan')):.3f}" for score in scores),
        )
    return table


def memory_table(metrics: dict) -> Table:
    table = Table(title="per method: memory per device process, calibration budget")
    for column in ("method", "devices", "params/device", "vs full", "peak RSS", "budget"):
        table.add_column(column, justify="left" if column in ("method", "budget") else "right")
    for key, m in metrics["methods"].items():
        has = "param_bytes_max" in m
        table.add_row(
            PAPER[key], str(m["devices"]), f"{m['param_bytes_max'] / 1e6:.1f} MB" if has else "-",
            f"{m['param_ratio']:.2f}x" if "param_ratio" in m else "-", f"{m['rss_mb_max']:.0f} MB" if has else "-", m["budget"],
        )
    return table


def fleet_table(metrics: dict) -> Table:
    table = Table(title="the target fleet, predicted by the cost model")
    for column in ("method", "regime", "devices", "latency ms", "speedup", "max memory MB", "energy J", "traffic MB", "fits"):
        table.add_column(column, justify="left" if column in ("method", "regime") else "right")
    for r in metrics["fleet"].values():
        table.add_row(
            r["method"], r["regime"], str(r["devices"]), f"{r['latency_ms']:.1f}", f"{r['speedup']:.2f}x", f"{r['memory_max_mb']:.1f}",
            f"{r['energy_j']:.2f}", f"{r['traffic_mb']:.2f}", "yes" if r["fits"] else "no",
        )
    return table


def default_calibrated(canonical) -> Path | None:
    """outputs/calibrate where it is complete and was made from the evaluated model."""
    folder = ROOT / "outputs" / "calibrate"
    if not (folder / "aggregator").is_dir():
        return None
    try:
        searched_policy(folder, canonical)
    except ArtifactError as e:
        console.print(f"not using {folder}: {e}")
        return None
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calibrated", type=Path, default=None, help="the calibrate stage's folder (default: outputs/calibrate if complete and of this model)")
    parser.add_argument("--profile", type=Path, default=None, help="one core's profile (default: outputs/profile/device.json if present, else measured)")
    parser.add_argument("--fleet", default=None, help="target fleet for the predicted rows (default: base.fleet)")
    parser.add_argument("--out", type=Path, default=ROOT / "outputs" / "benchmark-evaluate")
    parser.add_argument("--set", nargs="*", default=[], help="params: evaluate keys bare, others by section, e.g. requests=30 base.model=gpt2")
    args = parser.parse_args()
    torch.set_num_threads(1)
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    params = load_params(ROOT / "params.yaml", [pair if "." in pair.split("=")[0] else f"evaluate.{pair}" for pair in args.set])
    config, recipe = params.evaluate, params.calibrate
    loaded = load_model(params.base.model)
    calibrated = args.calibrated or default_calibrated(loaded.canonical)
    profile = args.profile or next((p for p in [ROOT / "outputs" / "profile" / "device.json"] if p.is_file()), None)
    data = read_prepared(None, params, loaded.canonical)  # what the prepare stage would write
    console.print(
        f"evaluate: {loaded.name}, {config.devices or len(os.sched_getaffinity(0))} device processes, batches {config.batch_sizes}, "
        f"links loopback + {config.links_mbit} Mbit/s, calibrated folder {calibrated or 'none (no searched row)'}"
    )
    metrics = run_evaluation(loaded, calibrated, args.fleet or params.base.fleet, data, args.out, config, recipe, profile=profile)
    console.print(methods_table(metrics))
    console.print(memory_table(metrics))
    console.print(fleet_table(metrics))
    for name, t in metrics["targets"].items():
        bound = f">= {t['at_least']}" if "at_least" in t else f"<= {t['at_most']}"
        value = "not measured" if t["value"] is None else f"{t['value']:.2f}"
        console.print(f"target {name}: {value} ({bound}) -> {'met' if t['met'] else 'NOT met' if t['met'] is False else '-'}")
    paper = metrics["paper"]
    for label in ("coformer", "coformer_compressed"):
        p = paper[label]
        console.print(
            f"GPT2-XL on the paper fleet, {label}: {p['speedup_vs_full']:.2f}x the full model ({p['speedup_vs_best_baseline']:.2f}x the best baseline), "
            f"memory/device {p['memory_change']:+.1%}, energy {p['energy_change']:+.1%}  |  paper: 3.1x, -76.3 %, about -40 %"
        )
    console.print(f"evaluate: {metrics['seconds']:.0f} s ({', '.join(f'{k} {v:.0f} s' for k, v in metrics['phase_seconds'].items())}); files in {args.out}")


if __name__ == "__main__":
    main()
