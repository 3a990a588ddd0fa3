"""``coformer predict``: the cost model's latency, memory, traffic and energy of every regime on a fleet."""

from __future__ import annotations

from typing import Literal

import typer

from coformer.adapters import MODEL_TYPES
from coformer.cli import app, console
from coformer.cli.decompose import check_fraction
from coformer.fleet.tables import memory_rich_table, regime_table

PRECISIONS = {"fp32": 4, "fp16": 2, "bf16": 2}
Precision = Literal["fp32", "fp16", "bf16"]


@app.command("predict")
def predict_command(
    model: str = typer.Option(
        "gpt2-xl",
        help=f"gpt2 | gpt2-medium | gpt2-large | gpt2-xl, or a local model folder (shapes only; model types: {', '.join(MODEL_TYPES)})",
    ),
    fleet: str = typer.Option("paper", help="catalog fleet name or a fleet YAML/JSON file"),
    precision: Precision = typer.Option("fp16", help="bytes of parameters, activations and KV cache"),
    batch: int = typer.Option(1, min=1, help="sequences per request"),
    seq_len: int = typer.Option(128, min=1, help="prompt tokens"),
    decode_tokens: int = typer.Option(32, min=0, help="tokens generated after the prompt (causal models)"),
    keep: float = typer.Option(1.0, help="CoFormer row: fraction of units kept, in (0, 1]"),
    channels: float = typer.Option(1.0, help="CoFormer row: fraction of hidden channels per sub-model, in (0, 1]"),
) -> None:
    """Predict full model vs CoFormer (s=0) vs tensor parallelism (s=1) vs pipeline on a fleet."""
    from coformer.fleet import ModelDims, Workload, load_fleet
    from coformer.fleet.compare import compare_regimes, memory_table

    check_fraction("--keep", keep)
    check_fraction("--channels", channels)
    dims = ModelDims.named(model, PRECISIONS[precision])
    target = load_fleet(fleet)
    workload = Workload(batch=batch, seq_len=seq_len, decode_tokens=decode_tokens)
    rows = compare_regimes(dims, target, workload, keep=keep, channels=channels)
    console.print(
        f"{model}: {dims.parameter_count() / 1e9:.3f} B parameters ({precision}), fleet '{target.name}' "
        f"({', '.join(target.names)}; aggregator {target.aggregator.name}), batch {batch}, prompt {seq_len}, "
        f"{decode_tokens} generated tokens"
    )
    console.print(regime_table(rows, "predicted per request (speedup over the full model on the fastest device)"))
    console.print(memory_rich_table(memory_table(rows, target), target))
