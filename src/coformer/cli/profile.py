"""``coformer profile``: measure this machine as device profiles at the configured model's shapes."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from coformer.cli import app, console
from coformer.loading import DEFAULT_MODEL


def profile_table(measurements: dict) -> Table:
    table = Table(title="device profiles of this machine")
    for column in ("device", "matmul GFLOP/s", "memory GB/s", "weights GB/s", "us/block", "us/forward", "memory GiB", "link MB/s", "rtt us", "took s"):
        table.add_column(column, justify="left" if column == "device" else "right")
    for label, m in measurements.items():
        p = m.profile
        table.add_row(
            label, f"{p.matmul_flops / 1e9:.1f}", f"{p.memory_bandwidth / 1e9:.1f}", f"{(p.weight_bandwidth or p.memory_bandwidth) / 1e9:.1f}",
            f"{p.block_overhead_s * 1e6:.0f}", f"{p.forward_overhead_s * 1e6:.0f}", f"{p.memory_bytes / 2**30:.1f}",
            f"{p.link_bandwidth / 1e6:,.0f}", f"{p.link_rtt_s * 1e6:.0f}", f"{m.seconds:.1f}",
        )
    return table


def chain_table(measurement) -> Table:
    table = Table(title=f"block chains, one core: measured vs the fitted cost model (median error {measurement.block_error():.1%})")
    for column in ("heads", "neurons", "blocks", "batch", "tokens", "step", "measured ms", "predicted ms"):
        table.add_column(column, justify="right")
    for b in measurement.blocks:
        table.add_row(
            str(b["heads"]), str(b["neurons"]), str(b["blocks"]), str(b["batch"]), str(b["tokens"]),
            "decode" if b["decode"] else "prefill", f"{b['measured_s'] * 1e3:.2f}", f"{b['predicted_s'] * 1e3:.2f}",
        )
    return table


@app.command("profile")
def profile_command(
    model: str = typer.Option(DEFAULT_MODEL, help="model whose shapes are measured: a GPT-2 size, hub id, local folder or the default"),
    batch: int = typer.Option(1, min=1, help="sequences per request"),
    seq_len: int = typer.Option(128, min=1, help="tokens per sequence"),
    out: Path = typer.Option(Path("outputs/profile/device.json"), help="profile of one core (one device)"),
    machine_out: Path = typer.Option(None, help="also write the whole machine (all cores) as one profile here"),
    core: int = typer.Option(None, help="core to pin the one-core measurement to (default: the last)"),
    active_power_w: float = typer.Option(0.0, min=0, help="board power while computing (not measurable here)"),
    idle_power_w: float = typer.Option(0.0, min=0, help="board power while idle"),
    repeats: int = typer.Option(7, min=2, help="timed repeats of every measurement"),
    statistic: str = typer.Option("min", help="min (robust on a shared machine) | median"),
) -> None:
    """Measure matmul throughput, memory bandwidth, overheads and block latencies; write a profile."""
    from coformer.errors import CoFormerError
    from coformer.fleet import ModelDims, Workload
    from coformer.fleet.measure import profile_machine

    if statistic not in ("min", "median"):
        raise CoFormerError(f"--statistic {statistic!r} must be 'min' or 'median'")
    if idle_power_w > active_power_w:
        raise CoFormerError(f"--idle-power-w {idle_power_w} exceeds --active-power-w {active_power_w}")
    dims = ModelDims.named(model)
    workload = Workload(batch=batch, seq_len=seq_len)
    with console.status(f"measuring this machine at the shapes of {model} (batch {batch} x {seq_len} tokens)"):
        per_core, machine = profile_machine(
            dims, workload, core=core, whole=machine_out is not None, active_power_w=active_power_w,
            idle_power_w=idle_power_w, repeats=repeats, statistic=statistic,
        )
    measurements = {"one core": per_core} | ({"whole machine": machine} if machine else {})
    console.print(profile_table(measurements))
    console.print(chain_table(per_core))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(per_core.profile.model_dump_json(indent=1))
    console.print(f"wrote {out}")
    if machine is not None:
        machine_out.parent.mkdir(parents=True, exist_ok=True)
        machine_out.write_text(machine.profile.model_dump_json(indent=1))
        console.print(f"wrote {machine_out}")
