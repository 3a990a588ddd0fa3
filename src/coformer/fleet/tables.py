"""Rich tables of the cost model's comparison of regimes, shared by ``coformer predict`` and the benchmarks."""

from __future__ import annotations

import math

from rich.table import Table


def size(n: float) -> str:
    return f"{n / 2**30:.2f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB"


def regime_table(rows, title: str) -> Table:
    table = Table(title=title)
    for column in ("regime", "devices", "latency ms", "speedup", "energy J", "traffic MB", "fits"):
        table.add_column(column, justify="left" if column in ("regime", "devices", "fits") else "right")
    for row in rows:
        r = row.report
        fits = "yes" if r.feasible else "no: " + ", ".join(f"{name} +{size(over)}" for name, over in r.overflow)
        table.add_row(
            row.name, str(len(row.devices)), f"{r.latency_s * 1e3:,.1f}", f"{row.speedup:.2f}x", f"{r.energy_j:.2f}",
            f"{r.comm_bytes / 1e6:,.1f}", fits,
        )
    return table


def memory_rich_table(memory: dict[str, dict[str, float]], fleet) -> Table:
    table = Table(title="memory per device (usable memory in the header)")
    table.add_column("regime")
    for d in fleet.devices:
        table.add_column(f"{d.name} ({size(d.memory_bytes)})", justify="right")
    for name, per in memory.items():
        table.add_row(name, *("-" if math.isnan(v) else size(v) for v in per.values()))
    return table
