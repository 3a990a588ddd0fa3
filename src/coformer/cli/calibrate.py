"""``coformer calibrate``: a decomposed folder in, calibrated sub-models + aggregator out (DeBo stage 2)."""

from __future__ import annotations

import logging
from pathlib import Path

import typer
import yaml

from coformer.cli import app, console
from coformer.errors import CoFormerError
from coformer.loading import DEFAULT_MODEL


def read_config(params: Path | None, overrides: list[str]):
    """The ``calibrate:`` section of a params file (if given) with ``key=value`` overrides on top."""
    from coformer.calibrate import CalibrationConfig

    section = {}
    if params is not None:
        if not params.is_file():
            raise CoFormerError(f"--params {params} does not exist; give a params.yaml with a calibrate: section")
        section = dict((yaml.safe_load(params.read_text()) or {}).get("calibrate") or {})
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep:
            raise CoFormerError(f"--set {item!r} must look like key=value, e.g. lr=5e-4")
        section[key] = yaml.safe_load(value)  # numbers, booleans and strings as YAML reads them
    return CalibrationConfig.parse(section)


@app.command("calibrate")
def calibrate_command(
    decomposed: Path = typer.Option(..., help="folder with policy.json (and devices/, aggregator/) from `coformer decompose` or the search"),
    out: Path = typer.Option(Path("outputs/calibrated"), help="output folder; a killed run started again here resumes"),
    model: str = typer.Option(DEFAULT_MODEL, help="the original model (the teacher): hub id, local folder, or the embedded default"),
    params: Path = typer.Option(None, help="params.yaml whose calibrate: section sets the schedule"),
    set_: list[str] = typer.Option([], "--set", help="override one calibrate parameter, e.g. --set final_steps=200"),
    source: str = typer.Option("builtin", help="calibration texts: builtin, a local .txt/.jsonl/.csv, or a cached hub id"),
    limit: int = typer.Option(None, help="use at most this many calibration texts"),
    tracking_uri: str = typer.Option("sqlite:///mlflow.db", help="MLflow tracking URI"),
    experiment: str = typer.Option("coformer", help="MLflow experiment"),
) -> None:
    """Calibrate sub-models progressively against the original model and write safetensors + JSON."""
    from coformer.calibrate import CalibrationData, calibrate, load_student
    from coformer.data import load_texts
    from coformer.executor import Teacher
    from coformer.loading import load_model

    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    config = read_config(params, set_)
    loaded = load_model(model)
    if loaded.canonical.config.embedding == "vit":
        raise CoFormerError("`coformer calibrate` takes text models; calibrate ViT through coformer.calibrate with image batches")
    policy, student = load_student(decomposed, loaded.canonical)
    teacher = Teacher(loaded.canonical.body, loaded.canonical.head)
    texts = load_texts(source, "calibration", limit=limit, seed=config.seed)
    max_length = min(config.max_length, loaded.canonical.config.max_positions or config.max_length)
    data = CalibrationData.from_texts(loaded.processor, texts, config.batch_size, max_length, config.seed)
    console.print(f"calibrating {len(student.submodels)} sub-models (sync={policy.sync}) on {len(texts)} texts")
    result = calibrate(teacher, student, policy, data, config, out, tracking_uri, experiment)
    if result.resumed:
        console.print(f"resumed after stage(s) {', '.join(result.resumed)}")
    console.print(f"wrote {out}/policy.json, {out}/devices/*, {out}/aggregator ({result.seconds:.0f} s, MLflow run {result.run_id})")
