"""The evaluation's files: metrics for ``dvc metrics``, CSVs for ``dvc plots``, PNG figures for an
offline reader (matplotlib, no display), and a short markdown report."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from coformer.evaluation.config import EvaluateConfig  # noqa: E402
from coformer.evaluation.methods import PAPER, Method  # noqa: E402
from coformer.evaluation.quality import BY_DEFINITION, LOWER_IS_BETTER, TASK_METRICS  # noqa: E402
from coformer.evaluation.summary import find  # noqa: E402

QUALITY = list(dict.fromkeys(k for keys in TASK_METRICS.values() for k in keys))  # every task's scores, once

COLUMNS = [
    "method", "link", "batch", "wire", "micro_batches", "devices", "measured", "latency_ms", "p90_ms", "throughput_seq_s",
    "compute_ms", "comm_ms", "predicted_ms", "prediction_error", "bytes_per_device", "request_cosine", "runtime_error",
    *QUALITY, "budget",
]


def write_csv(path: Path, rows: list[dict], columns: list[str]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def write_outputs(out: Path, metrics: dict, rows: list[dict], memory: list[dict], methods: list[Method], config: EvaluateConfig) -> None:
    per_method, scores = metrics["methods"], metrics["scores"]
    full_rows = [r | {k: per_method[r["method"]].get(k) for k in (*QUALITY, "budget")} for r in rows]
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1, default=float))
    write_csv(out / "methods.csv", full_rows, COLUMNS)
    largest = max(config.batch_sizes)
    front = [r for r in full_rows if r["measured"] and r["link"] == "loopback" and r["batch"] == largest and r["micro_batches"] == 1]
    write_csv(out / "front.csv", front, ["method", "latency_ms", *scores])
    write_csv(out / "memory.csv", memory, ["method", "rank", "role", "core", "param_bytes", "rss_bytes"])
    fleet = list(metrics["fleet"].values())
    write_csv(out / "fleet.csv", fleet, ["method", "regime", "devices", "latency_ms", "speedup", "memory_max_mb", "energy_j", "traffic_mb", "fits"])
    plot_front(out / "front.png", front, largest, scores[0])
    plot_memory(out / "memory.png", memory)
    plot_split(out / "latency_split.png", [r for r in full_rows if r["measured"] and r["micro_batches"] == 1])
    (out / "report.md").write_text(markdown(metrics, full_rows, config))


SCORE_LABELS = {
    "cosine": "output cosine to the teacher",
    "kl": "KL(teacher || method) per token, lower is better",
    "agreement": "top-1 agreement with the teacher",
    "accuracy": "accuracy on the labelled held-out split",
}


def plot_front(path: Path, front: list[dict], batch: int, score: str) -> None:
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for r in front:
        ax.scatter(r["latency_ms"], r[score])
        ax.annotate(r["method"], (r["latency_ms"], r[score]), textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.set(xlabel=f"measured latency, batch {batch} (ms)", ylabel=SCORE_LABELS[score], title="quality against latency")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_memory(path: Path, memory: list[dict]) -> None:
    fig, ax = plt.subplots(figsize=(8, 4.5))
    labels = [f"{m['method']}\n{m['role']}" for m in memory]
    ax.bar(range(len(memory)), [m["param_bytes"] / 1e6 for m in memory], label="parameters")
    ax.bar(range(len(memory)), [m["rss_bytes"] / 1e6 for m in memory], alpha=0.3, label="peak RSS (torch runtime included)")
    ax.set_xticks(range(len(memory)), labels, rotation=60, ha="right", fontsize=7)
    ax.set(ylabel="MB per device process", title="memory per device process")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_split(path: Path, rows: list[dict]) -> None:
    fig, ax = plt.subplots(figsize=(9, 4.5))
    labels = [f"{r['method']} b{r['batch']} {r['link']} {r['wire']}" for r in rows]
    compute = [r["compute_ms"] for r in rows]
    ax.barh(range(len(rows)), compute, label="compute (critical path)")
    ax.barh(range(len(rows)), [r["comm_ms"] for r in rows], left=compute, label="communication and waiting")
    ax.set_yticks(range(len(rows)), labels, fontsize=7)
    ax.set_xscale("log")
    ax.set(xlabel="measured median latency (ms, log)", title="latency split")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def fmt(value, spec: str = ".1f") -> str:
    return "-" if value is None else format(value, spec)


def markdown(metrics: dict, rows: list[dict], config: EvaluateConfig) -> str:
    methods, t, scores = metrics["methods"], metrics["targets"], metrics["scores"]
    score = scores[0]
    best = min if score in LOWER_IS_BETTER else max
    teacher = {k: v for k, v in metrics["teacher"].items() if k not in BY_DEFINITION}
    lines = [
        "# Evaluation",
        "",
        f"{metrics['devices']} device processes, one per core, one torch thread each, over gloo; slow links: {metrics['shaping']}. "
        f"{config.requests} timed requests per series (on the loopback in {config.rounds} rounds through the methods, the order reversed "
        f"and the devices moved one core each round, {config.warmup} warm-up each run), {metrics['request']}. "
        f"Baselines calibrated at {config.baseline_budget:g} of the calibrate section's steps (scaled down to keep the default pipeline short). "
        f"Quality ({metrics['task']} model): {', '.join(scores)} against the teacher"
        + (f" (the teacher's own: {', '.join(f'{k} {v:.4g}' for k, v in teacher.items())})." if teacher else "."),
        "",
        f"| method | devices | calibration budget | {' | '.join(scores)} | params/device | " + " | ".join(f"b{b} ms" for b in config.batch_sizes) + " |",
        "|---|---|---|" + "---|" * len(scores) + "---|" + "---|" * len(config.batch_sizes),
    ]
    for key, m in methods.items():
        latencies = [find(rows, key, f"b{b}") for b in config.batch_sizes]
        cells = [fmt(r["latency_ms"]) if r and r["measured"] else f"{fmt(r and r.get('predicted_ms'))} (predicted)" for r in latencies]
        ratio = f"{m['param_ratio']:.2f}x" if "param_ratio" in m else "-"
        quality = " | ".join(fmt(m.get(score), ".4g") for score in scores)
        lines.append(f"| {PAPER[key]} | {m['devices']} | {m['budget']} | {quality} | {ratio} | " + " | ".join(cells) + " |")
    lines += ["", "Targets:", ""]
    for name, v in t.items():
        bound = f">= {v['at_least']}" if "at_least" in v else f"<= {v['at_most']}"
        lines.append(f"- {name}: {fmt(v['value'], '.2f')} (target {bound}): {'met' if v['met'] else 'not met' if v['met'] is False else 'not measured'}")
    measured = {k: m for k, m in methods.items() if f"latency_ms_b{max(config.batch_sizes)}" in m}
    if measured:
        b = max(config.batch_sizes)
        fastest = min(measured, key=lambda k: measured[k][f"latency_ms_b{b}"])
        lines += ["", f"Fastest at batch {b} on the loopback: {PAPER[fastest]}."]
        inexact = [k for k, m in methods.items() if not m["exact"] and score in m]
        if inexact:
            lines[-1] += f" Best of the inexact methods by {score}: {PAPER[best(inexact, key=lambda k: methods[k][score])]}."

    if "single-edge" in methods and "aggregate-edge" in methods:
        s, a = methods["single-edge"], methods["aggregate-edge"]
        lines.append(
            f"Single-Edge against Aggregate-Edge at the same budget: {score} {fmt(s.get(score), '.4g')} vs {fmt(a.get(score), '.4g')}, "
            f"batch-{max(config.batch_sizes)} latency {fmt(s.get(f'latency_ms_b{max(config.batch_sizes)}'))} vs {fmt(a.get(f'latency_ms_b{max(config.batch_sizes)}'))} ms."
        )
    if "coformer-gateway" in methods and "aggregate-edge" in methods:
        g, a, b = methods["coformer-gateway"], methods["aggregate-edge"], max(config.batch_sizes)
        lines.append(
            f"Embedding at a gateway (the way under 0.6x): parameters per device {fmt(a.get('param_ratio'), '.2f')}x -> "
            f"{fmt(g.get('param_ratio'), '.2f')}x of the full model, batch-{b} latency {fmt(a.get(f'latency_ms_b{b}'))} -> "
            f"{fmt(g.get(f'latency_ms_b{b}'))} ms (the gateway shares the first device's core), quality unchanged (same weights, fp32 wire)."
        )
    paper = metrics["paper"]
    lines += [
        "",
        "GPT2-XL on the paper-like fleet (cost model): CoFormer "
        f"{paper['coformer']['speedup_vs_full']:.2f}x the full model, memory per device {paper['coformer']['memory_change']:+.1%}, "
        f"energy {paper['coformer']['energy_change']:+.1%}; compressed sub-models {paper['coformer_compressed']['speedup_vs_full']:.2f}x, "
        f"{paper['coformer_compressed']['memory_change']:+.1%}, {paper['coformer_compressed']['energy_change']:+.1%}. "
        "Paper: 3.1x, -76.3 % memory, about -40 % energy.",
        "",
        "Files: methods.csv (every timed series, cost-model prediction beside it), front.csv/front.png, memory.csv/memory.png, "
        "latency_split.png, fleet.csv (every method on the target fleet, predicted).",
    ]
    return "\n".join(lines) + "\n"
