"""Paper-scale prediction: GPT2-XL on the catalog's 4-device Jetson fleet, by the cost model.

    python benchmarks/paper_scale.py [--fleet paper] [--seq-len 128] [--decode-tokens 32]

Prints per regime (full model on the fastest device, CoFormer s=0, tensor parallelism s=1,
layer-wise pipeline, and CoFormer with compressed sub-models) the latency, speedup, energy,
traffic and memory per device, next to the CoFormer paper's headline claims for context.
Nothing here is measured: the figures come from the catalog (devices.yaml, with sources and
stated assumptions) and the cost model, whose error on this machine ``cost_model.py`` reports.
Shapes come from GPT2Config (no weights are downloaded); the parameter count is checked against
the model built on the meta device.
"""

from __future__ import annotations

import argparse

import torch
from rich.console import Console

from coformer.fleet import ModelDims, Workload, load_fleet
from coformer.fleet.compare import compare_regimes, memory_table
from coformer.fleet.tables import memory_rich_table, regime_table

console = Console(width=140)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fleet", default="paper")
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--decode-tokens", type=int, default=32)
    parser.add_argument("--keep", type=float, default=0.75, help="compressed CoFormer row: kept fraction of units")
    parser.add_argument("--channels", type=float, default=0.5, help="compressed CoFormer row: fraction of hidden channels")
    args = parser.parse_args()

    from transformers import GPT2Config, GPT2LMHeadModel

    dims = ModelDims.named("gpt2-xl", bytes_per_param=2)
    with torch.device("meta"):
        counted = sum(p.numel() for p in GPT2LMHeadModel(GPT2Config(n_embd=1600, n_layer=48, n_head=25)).parameters())
    fleet = load_fleet(args.fleet)
    workload = Workload(batch=1, seq_len=args.seq_len, decode_tokens=args.decode_tokens)
    console.print(
        f"GPT2-XL: {dims.parameter_count():,} parameters by the cost model, {counted:,} built on the meta device "
        f"({abs(dims.parameter_count() - counted) / counted:.3%} apart); fp16; fleet '{fleet.name}': "
        + ", ".join(f"{d.name} ({d.source.removeprefix('catalog: ')})" for d in fleet.devices)
        + f"; prompt {args.seq_len} tokens, {args.decode_tokens} generated"
    )
    rows = compare_regimes(dims, fleet, workload)
    compressed = compare_regimes(dims, fleet, workload, keep=args.keep, channels=args.channels)[1]
    compressed.speedup = rows[0].report.latency_s / compressed.report.latency_s
    rows.append(compressed)
    console.print(regime_table(rows, "predicted per request (speedup over the full model on the fastest device)"))
    console.print(memory_rich_table(memory_table(rows, fleet), fleet))
    full = rows[0].report
    for row in rows[1:]:
        r = row.report
        console.print(
            f"{row.name}: largest per-device memory {1 - r.memory_bytes.max() / full.memory_bytes[0]:.1%} below the full model, "
            f"energy {r.energy_j / full.energy_j - 1:+.1%} vs the full model on {rows[0].devices[0]}"
        )
    console.print("paper (Xu et al., IEEE TC 2025) for context: up to 3.1x faster than baselines, 76.3% less memory per device, ~40% less energy")


if __name__ == "__main__":
    main()
