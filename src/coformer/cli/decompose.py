"""``coformer decompose``: original model in, one sub-model per device + aggregator + policy out."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from coformer.cli import app, console
from coformer.decompose import DeviceShare, build_policy, compute_importance, decompose, shape_of
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
    if len(shares) != devices or min(shares) <= 0:
        raise CoFormerError(f"--shares needs {devices} positive numbers (one per device), got {text!r}")
    return shares


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
    model: str = typer.Option(DEFAULT_MODEL, help="hub id, local folder, or the embedded default"),
    devices: int = typer.Option(3, min=1, help="number of sub-models / edge devices"),
    sync: int = typer.Option(0, min=0, help="0: aggregate once; 1: tensor parallel; k: sync every k blocks"),
    out: Path = typer.Option(Path("outputs/decomposed"), help="folder for policy.json, devices/ and aggregator/"),
    shares: str = typer.Option(None, help="relative size per device, e.g. 2,1,1 (default: equal)"),
    keep: float = typer.Option(1.0, help="fraction of heads/neurons kept (the least important are dropped)"),
    channels: float = typer.Option(1.0, help="fraction of hidden channels each sub-model's stream keeps"),
    dealing: str = typer.Option("balanced", help="balanced | grouped"),
    importance: str = typer.Option("magnitude", help="magnitude (data-free) | activation (on the calibration split)"),
) -> None:
    """Slice a model into per-device sub-models and write them as safetensors + JSON."""
    if dealing not in ("balanced", "grouped"):
        raise CoFormerError(f"--dealing {dealing!r} must be 'balanced' or 'grouped'")
    loaded = load_model(model)
    batches = None
    if importance == "activation":
        from coformer.data import calibration_batches

        batches = calibration_batches(loaded.processor, loaded.canonical.config)
    scores = compute_importance(loaded.canonical.body, importance, batches)
    device_shares = [
        DeviceShare(name=f"device{k}", heads=s, neurons=s, channels=channels)
        for k, s in enumerate(parse_shares(shares, devices))
    ]
    policy = build_policy(shape_of(loaded.canonical), scores, device_shares, keep=keep, sync=sync, dealing=dealing)
    submodels, aggregator = decompose(loaded.canonical, policy)
    write_artifacts(out, policy, submodels, aggregator)
    console.print(device_table(policy, submodels))
    console.print(f"wrote {out}/policy.json, {out}/devices/*, {out}/aggregator")
