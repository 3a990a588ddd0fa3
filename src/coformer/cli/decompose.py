"""``coformer decompose``: original model in, one sub-model per device + aggregator + policy out."""

from __future__ import annotations

import math
from pathlib import Path

import typer
from rich.table import Table

from coformer.adapters import MODEL_TYPES
from coformer.cli import app, console
from coformer.decompose import DeviceShare, build_policy, compute_importance, decompose, shape_of
from coformer.decompose.builder import Dealing
from coformer.decompose.importance import ImportanceMethod
from coformer.errors import CoFormerError
from coformer.loading import DEFAULT_MODEL, load_model
from coformer.modeling import save_module


def parse_shares(text: str | None, devices: int) -> list[float]:
    if text is None:
        return [1.0] * devices
    try:
        shares = [float(s) for s in text.split(",")]
    except ValueError as e:
        raise CoFormerError(f"--shares {text!r} must be comma-separated numbers, e.g. 2,1,1") from e
    if len(shares) != devices or not all(math.isfinite(s) and s > 0 for s in shares):
        raise CoFormerError(f"--shares needs {devices} positive finite numbers (one per device), got {text!r}")
    return shares


def check_fraction(option: str, value: float) -> None:
    """``value`` in (0, 1]; NaN is refused too (every comparison with it is false)."""
    if not 0 < value <= 1:
        raise CoFormerError(f"{option} {value} must be a fraction in (0, 1], e.g. {option} 0.5")


def check_out(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise CoFormerError(f"--out {out} is a file; give a folder for policy.json, devices/ and aggregator/")


def write_artifacts(out: Path, policy, submodels, aggregator) -> None:
    policy.save(out / "policy.json")
    for sub in submodels:
        save_module(sub, out / "devices" / sub.config.name)
    save_module(aggregator, out / "aggregator")


def device_table(policy, submodels) -> Table:
    table = Table(title=f"decomposition (sync={policy.sync})")
    for column in ("device", "heads", "neurons", "channels", "parameters", "bytes"):
        table.add_column(column, justify="left" if column == "device" else "right")
    for sub in submodels:
        c = sub.config
        params = sum(p.numel() for p in sub.parameters())
        size = sum(p.numel() * p.element_size() for p in sub.parameters())
        table.add_row(c.name, str(sum(c.heads_per_block)), str(sum(c.neurons_per_block)), str(c.width), f"{params:,}", f"{size / 2**20:.1f} MiB")
    return table


@app.command("decompose")
def decompose_command(
    model: str = typer.Option(
        DEFAULT_MODEL, help=f"hub id, local folder, or the embedded default; model types: {', '.join(MODEL_TYPES)}"
    ),
    devices: int = typer.Option(3, min=1, help="number of sub-models / edge devices"),
    sync: int = typer.Option(0, min=0, help="0: aggregate once; 1: tensor parallel; k: sync every k blocks"),
    out: Path = typer.Option(Path("outputs/decomposed"), help="folder for policy.json, devices/ and aggregator/"),
    shares: str = typer.Option(None, help="relative size per device, e.g. 2,1,1 (default: equal)"),
    keep: float = typer.Option(1.0, help="fraction of heads/neurons kept, in (0, 1] (the least important are dropped)"),
    channels: float = typer.Option(1.0, help="fraction of hidden channels each sub-model's stream keeps, in (0, 1]"),
    dealing: Dealing = typer.Option("balanced", help="deal ranked units to devices in turn, or in blocks"),
    importance: ImportanceMethod = typer.Option(
        "magnitude", help="rank units by their weights (data-free) or by activations on the calibration split"
    ),
) -> None:
    """Slice a model into per-device sub-models and write them as safetensors + JSON."""
    check_fraction("--keep", keep)
    check_fraction("--channels", channels)
    check_out(out)
    relative = parse_shares(shares, devices)
    loaded = load_model(model)
    batches = None
    if importance == "activation":
        from coformer.data import calibration_batches

        if loaded.processor is None:
            raise CoFormerError(
                f"--importance activation encodes calibration data, and {model!r} ships no tokenizer or image "
                "processor; save it into the model folder (save_pretrained) or use --importance magnitude"
            )

        batches = calibration_batches(loaded.processor, loaded.canonical.config)
    scores = compute_importance(loaded.canonical.body, importance, batches)
    device_shares = [
        DeviceShare(name=f"device{k}", heads=s, neurons=s, channels=channels)
        for k, s in enumerate(relative)
    ]
    policy = build_policy(shape_of(loaded.canonical), scores, device_shares, keep=keep, sync=sync, dealing=dealing)
    submodels, aggregator = decompose(loaded.canonical, policy)
    write_artifacts(out, policy, submodels, aggregator)
    console.print(device_table(policy, submodels))
    console.print(f"wrote {out}/policy.json, {out}/devices/*, {out}/aggregator")
