"""``run_evaluation``: every method measured as real device processes, its quality against the
teacher, the cost model beside it, written into one folder. Knows neither DVC nor MLflow.

Writes into ``out``: ``metrics.json`` (also returned), ``methods.csv`` (one row per timed
series), ``front.csv`` (quality against latency), ``memory.csv`` (per device process),
``fleet.csv`` (every method on the target fleet, predicted), ``front.png``, ``memory.png``,
``latency_split.png`` and ``report.md``.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.progress import Progress

from coformer.calibrate import CalibrationConfig, CalibrationData, load_student
from coformer.data.prepared import Prepared
from coformer.decompose import compute_importance
from coformer.errors import CoFormerError, InfeasibleFleetError
from coformer.evaluation.config import EvaluateConfig
from coformer.evaluation.methods import Builder, Method, build_methods, fitting_keep, searched_policy
from coformer.evaluation.prediction import fleet_rows, paper_rows, predict_measured
from coformer.evaluation.quality import TASK_METRICS, output_cosine, quality, quality_batch_size, task_of
from coformer.evaluation.report import write_outputs
from coformer.evaluation.summary import memory_rows, method_metrics, targets
from coformer.evaluation.timing import time_methods
from coformer.executor import Teacher
from coformer.fleet import DeviceProfile, Fleet, ModelDims, Workload, load_fleet, load_profile
from coformer.runtime import shaping_unavailable


def run_evaluation(
    loaded,
    calibrated: str | Path | None,
    fleet: str | Path,
    data: Prepared,
    out: str | Path,
    config: EvaluateConfig,
    recipe: CalibrationConfig,
    profile: str | Path | DeviceProfile | None = None,
    work: str | Path | None = None,
    console: Console | None = None,
) -> dict:
    """Evaluate every method; see the module docstring for what is written to ``out``. Returns
    what metrics.json holds plus ``series``, the rows of methods.csv.

    ``loaded``: the teacher (``coformer.loading.load_model``); ``calibrated``: the calibrate stage's
    folder (None: no searched row); ``fleet``: fleet file or catalog name; ``data``: the prepare
    stage's texts or images: the held-out split is timed and scored (with the metrics of the
    model's task, ``quality.TASK_METRICS``), the calibration split ranks units and calibrates the
    baselines with ``recipe`` at ``config.baseline_budget`` of its steps; ``profile``: one core of
    this machine (the profile stage's device.json; None: measured now); ``work``: where the
    baselines' folders are built (None: a temporary folder, deleted).
    """
    canonical, processor = loaded.canonical, loaded.processor
    seq_len = request_length(canonical.config, config)
    calibrated = Path(calibrated) if calibrated is not None else None
    searched = None if calibrated is None else searched_policy(calibrated, canonical)
    started = time.time()
    console = console or Console()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    head = canonical.head.config
    kind = task_of(head)  # embedding | lm | classifier | states
    cores = config.devices or len(os.sched_getaffinity(0))
    dims = ModelDims.from_canonical(canonical)
    target = load_fleet(fleet)
    largest = Workload(batch=max(config.batch_sizes), seq_len=seq_len)
    single = single_edge_size(dims, target, largest, cores, config)
    teacher = Teacher(canonical.body, canonical.head).eval().requires_grad_(False)
    limit = canonical.config.max_tokens or config.max_length
    with tempfile.TemporaryDirectory(prefix="coformer-evaluate-") as tmp, Progress(console=console, transient=True) as progress:
        task = progress.add_task("evaluate: building the baselines", total=None)
        ranking = data.batches(processor, "calibration", 8, min(64, limit), limit=32) if config.importance == "activation" else None
        importance = compute_importance(canonical.body, config.importance, ranking)
        train = None
        if config.baseline_budget > 0:
            train = CalibrationData.from_prepared(data, processor, recipe.batch_size, min(recipe.max_length, limit), recipe.seed)
        builder = Builder(loaded, importance, train, recipe, config.baseline_budget, Path(work or tmp))
        methods = build_methods(builder, cores, single, calibrated, searched, recipe, config.methods)

        phases = {"baselines": time.time() - started}
        progress.update(task, description="evaluate: quality against the teacher")
        max_length = min(config.max_length, limit)
        held = data.batches(processor, "evaluation", quality_batch_size(head), max_length, limit=config.quality_texts, by_length=True)
        scores = method_quality(methods, teacher, processor, held, data.pairs[: config.quality_pairs], max_length)

        phases["quality"] = time.time() - started - sum(phases.values())
        unavailable = shaping_unavailable()
        if unavailable:
            console.print(f"evaluate: slow links not shaped ({unavailable}); their latencies are the cost model's, labelled predicted")
        requests = {b: data.request(processor, b, seq_len) for b in {*config.batch_sizes, config.shaped_batch}}
        runs = time_methods(methods, config, requests, unavailable, lambda d: progress.update(task, description=f"evaluate: timing {d}"))

        phases["timing"] = time.time() - started - sum(phases.values())
        progress.update(task, description="evaluate: the cost model")
        core = resolve_profile(profile, dims, seq_len)
        references = reference_outputs(methods, teacher, requests)
        rows = series_rows(runs, methods, references, dims, core, config, seq_len, unavailable)
        metrics = {
            "seconds": 0.0,
            "devices": cores,
            "task": kind,
            "scores": [k for k in TASK_METRICS[kind] if k in scores["teacher"]],  # the task's metrics this data allows
            "request": request_shape(canonical.config, seq_len),
            "shaping": unavailable or ("tc tbf between network namespaces" if config.links_mbit else "none asked for (evaluate.links_mbit)"),
            "teacher": scores["teacher"],
            "methods": method_metrics(methods, rows, runs, scores, config),
            "fleet": {r["method"]: r for r in fleet_rows(dims, target, largest, single, searched)},
            "paper": paper_rows(),
        }
        metrics["targets"] = targets(metrics, config)
        phases["prediction"] = time.time() - started - sum(phases.values())
        metrics["seconds"], metrics["phase_seconds"] = time.time() - started, phases
        write_outputs(out, metrics, rows, memory_rows(runs), methods, config)
    return metrics | {"series": rows}


def single_edge_size(dims: ModelDims, fleet: Fleet, workload: Workload, cores: int, config: EvaluateConfig) -> tuple[str, float] | None:
    """Single-Edge's (device, kept fraction); None where no one-device model fits the fleet and the
    row is not asked for (its predicted fleet row is then left out too)."""
    if config.single_keep is not None:
        return fleet.devices[0].name, config.single_keep
    try:
        return fitting_keep(dims, fleet, workload, cores)
    except InfeasibleFleetError:
        if "single-edge" in config.methods:
            raise
        return None


def request_length(config, evaluate: EvaluateConfig) -> int:
    """Tokens per timed sequence: ``evaluate.seq_len``, refused where the model has fewer positions
    (an image model's sequence is its patches, whatever seq_len says)."""
    if config.input_kind == "tokens" and config.max_tokens and evaluate.seq_len > config.max_tokens:
        raise CoFormerError(
            f"evaluate.seq_len={evaluate.seq_len} but the model has {config.max_tokens} positions; set evaluate.seq_len <= {config.max_tokens}"
        )
    return evaluate.seq_len


def request_shape(config, seq_len: int) -> str:
    """What one timed sequence is, in words, for the report."""
    if config.input_kind == "pixels":
        return f"{config.image_size} px images ({(config.image_size // config.patch_size) ** 2} patches each)"
    return f"{seq_len} tokens per sequence"


def method_quality(methods: list[Method], teacher, tokenizer, held, pairs, max_length: int) -> dict[str, dict]:
    """Quality per folder (computed once for folders shared by several methods); exact methods
    are the teacher's by construction."""
    teacher_scores = quality(teacher, teacher, tokenizer, held, pairs, max_length)
    scores = {"teacher": teacher_scores}
    by_folder: dict[Path, dict] = {}
    for m in methods:
        if m.exact:
            scores[m.key] = teacher_scores
            continue
        if m.folder not in by_folder:
            by_folder[m.folder] = quality(teacher, load_student(m.folder)[1], tokenizer, held, pairs, max_length)
        scores[m.key] = by_folder[m.folder]
    return scores


@torch.no_grad()
def reference_outputs(methods: list[Method], teacher, requests) -> dict:
    """Outputs of the teacher and of every measured method's in-process executor on each request."""
    refs = {("teacher", b): teacher(inputs).output for b, inputs in requests.items()}
    for m in methods:
        if m.measurable:
            student = load_student(m.folder)[1].eval()
            refs |= {(m.key, b): student(inputs).output for b, inputs in requests.items()}
    return refs


def resolve_profile(profile, dims: ModelDims, seq_len: int) -> DeviceProfile:
    if isinstance(profile, DeviceProfile):
        return profile
    if profile is not None:
        return load_profile(profile)
    from coformer.fleet.measure import measure_device

    return measure_device(dims, Workload(batch=1, seq_len=seq_len), threads=1, core=max(os.sched_getaffinity(0)), repeats=3).profile


def series_rows(runs, methods, references, dims, core, config: EvaluateConfig, seq_len: int, unavailable: str | None) -> list[dict]:
    """One row per timed series (and per predicted-only series), with the cost model beside it."""
    rows = []
    for method, rate, result in runs:
        link = "loopback" if rate is None else f"{rate:g} Mbit/s"
        for s in result.sets.values():
            batch = int(s.name.split("-")[0][1:])
            predicted = None if s.micro_batches > 1 else predict_measured(method, dims, core, Workload(batch=batch, seq_len=seq_len), rate)
            latency = s.median_s
            rows.append(
                {
                    "method": method.key,
                    "link": link,
                    "batch": batch,
                    "wire": s.wire,
                    "micro_batches": s.micro_batches,
                    "devices": method.devices,
                    "measured": True,
                    "latency_ms": latency * 1e3,
                    "p90_ms": s.p90_s * 1e3,
                    "throughput_seq_s": batch / latency,
                    "compute_ms": min(s.compute_median_s, latency) * 1e3,
                    "comm_ms": max(latency - s.compute_median_s, 0.0) * 1e3,
                    "predicted_ms": None if predicted is None else predicted * 1e3,
                    "prediction_error": None if predicted is None else predicted / latency - 1,
                    "bytes_per_device": float(s.bytes_sent.max()),
                    "request_cosine": output_cosine(s.output, references[("teacher", batch)]),
                    "runtime_error": float((s.output - references[(method.key, batch)]).abs().max()),
                }
            )
    predicted_only = [(m, None) for m in methods if not m.measurable]
    if unavailable:
        predicted_only += [(m, rate) for rate in config.links_mbit for m in methods if m.measurable and m.key in config.shaped_methods]
    for method, rate in predicted_only:
        batch = config.batch_sizes[-1] if rate is None else config.shaped_batch
        predicted = predict_measured(method, dims, core, Workload(batch=batch, seq_len=seq_len), rate)
        link = "loopback" if rate is None else f"{rate:g} Mbit/s"
        rows.append(
            {"method": method.key, "link": link, "batch": batch, "wire": "fp32", "micro_batches": 1, "devices": method.devices,
             "measured": False, "predicted_ms": predicted * 1e3}
        )
    return rows
