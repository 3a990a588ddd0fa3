"""Predicted cost of the competing execution regimes on one fleet (DESIGN section 7's baselines).

* full: the whole model on the fastest device (its memory overflow, if any, is reported);
* coformer: units dealt in proportion to device speed, independent streams, one merge (s = 0);
* tensor parallel [Distri-Edge]: the same split, all-reduced after every sub-layer (s = 1);
* pipeline [Pipe-Edge]: consecutive blocks in proportion to device speed, one stage after another.

"Speed" is the cost model's own: the inverse of the time a device takes for the model's blocks
at the request's shape, so a memory-bound decode is balanced by bandwidth, a prefill by FLOP/s.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from coformer.decompose import quotas
from coformer.fleet.cost import CostReport, UnitCounts, block_seconds, estimate, estimate_pipeline
from coformer.fleet.dims import ModelDims, Workload
from coformer.fleet.profile import Fleet


@dataclass
class Regime:
    name: str  # row label
    devices: list[str]  # devices that run part of the model, in order
    report: CostReport
    speedup: float = 1.0  # full-model latency on the fastest device / this latency


def speed_shares(dims: ModelDims, fleet: Fleet, workload: Workload) -> list[float]:
    """Shares of the units that make every device finish its blocks at the same time.

    Per device the cost model gives a fixed part ``o`` (overheads, norms and residuals at full
    width: paid whatever its share) and a variable part ``v`` (the units of the whole model);
    share ``x_k = (T - o_k) / v_k`` with ``sum x_k = 1``. A device whose fixed part alone exceeds
    ``T`` gets none.
    """
    full, empty = UnitCounts.full(dims), UnitCounts.full(dims)
    empty = UnitCounts(empty.heads * 0, empty.neurons * 0, empty.widths, 0)
    fixed = np.array([block_seconds(empty, dims, fleet.single(n), workload).sum() for n in fleet.names])
    variable = np.array([block_seconds(full, dims, fleet.single(n), workload).sum() for n in fleet.names]) - fixed
    taking = np.ones(len(fixed), dtype=bool)
    while True:  # drop devices too slow to finish in time even with no units, then re-solve
        finish = (1 + (fixed / variable)[taking].sum()) / (1 / variable)[taking].sum()
        shares = np.where(taking, (finish - fixed) / variable, 0.0)
        if (shares >= 0).all():
            return shares.tolist()
        taking &= shares > 0


def compare_regimes(
    dims: ModelDims, fleet: Fleet, workload: Workload, keep: float = 1.0, channels: float = 1.0
) -> list[Regime]:
    """The four regimes; ``keep`` and ``channels`` compress the CoFormer sub-models (1.0: none)."""
    shares = speed_shares(dims, fleet, workload)
    fastest = fleet.names[int(np.argmax(shares))]
    taking = [name for name, share in zip(fleet.names, shares) if share > 0]
    fleet, shares = fleet.subset(taking), [share for share in shares if share > 0]
    full = estimate(UnitCounts.full(dims), dims, fleet.single(fastest), workload)
    rows = [Regime(f"full model on {fastest}", [fastest], full)]
    coformer = UnitCounts.split(dims, shares, sync=0, keep=keep, channels=[channels] * len(shares))
    label = "CoFormer (s=0)" + ("" if keep == 1 and channels == 1 else f", keep {keep:g}, channels {channels:g}")
    rows.append(Regime(label, fleet.names, estimate(coformer, dims, fleet, workload)))
    rows.append(Regime("tensor parallel (s=1)", fleet.names, estimate(UnitCounts.split(dims, shares, sync=1), dims, fleet, workload)))
    layers = quotas(dims.num_layers, shares)
    stages = [name for name, n in zip(fleet.names, layers) if n > 0]
    staged = fleet.subset(stages, aggregator=fleet.aggregator.name if fleet.aggregator.name in stages else None)
    rows.append(Regime("pipeline (layer-wise)", stages, estimate_pipeline(dims, staged, workload, [n for n in layers if n > 0])))
    for row in rows:
        row.speedup = full.latency_s / row.report.latency_s
    return rows


def memory_table(rows: list[Regime], fleet: Fleet) -> dict[str, dict[str, float]]:
    """Bytes per device per regime (NaN where a device takes no part)."""
    table = {}
    for row in rows:
        per = dict(zip(row.devices, np.asarray(row.report.memory_bytes, dtype=float)))
        table[row.name] = {name: per.get(name, float("nan")) for name in fleet.names}
    return table
