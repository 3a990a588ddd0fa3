"""What a run measured, per request set and per rank, from the reports the device processes wrote.

Latency of a request: from its start on rank 0 (where it arrives) to its end on the output rank
(the clocks are the machine's one monotonic clock). Compute: per rank, its time in the request
minus its time inside transfers; the critical path's compute is the slowest rank's for the
ensemble modes (devices work side by side) and the stages' sum for a pipeline (they take turns;
an upper bound when micro-batches overlap). Communication is the rest of the latency.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch

from coformer.runtime.plan import RuntimePlan


@dataclass
class SetResult:
    name: str
    wire: str  # activation dtype on the wire
    micro_batches: int
    latency_s: np.ndarray  # (R,) per timed request
    compute_s: np.ndarray  # (R,) the critical path's compute
    bytes_sent: np.ndarray  # (ranks,) bytes each rank sent per request (median over requests)
    output: torch.Tensor  # the model output of the last request (B, ...)

    @property
    def median_s(self) -> float:
        return float(np.median(self.latency_s))

    @property
    def p90_s(self) -> float:
        return float(np.percentile(self.latency_s, 90))

    @property
    def compute_median_s(self) -> float:
        return float(np.median(self.compute_s))


@dataclass
class RunResult:
    roles: list[str]  # per rank: device name, "stage k" or "gateway"
    cores: list[int]  # per rank: the core it was pinned to
    param_bytes: list[int]  # per rank: bytes of the parameters and buffers it holds
    rss_bytes: list[int]  # per rank: peak resident memory of the process
    sets: dict[str, SetResult]
    link: str  # "loopback" or the shaped rate
    seconds: float  # wall time of the whole run, process start-up included

    @classmethod
    def pooled(cls, runs: list[RunResult]) -> RunResult:
        """One result from several runs of one plan (rounds interleaved with other plans): their
        timed requests pooled, the peak memory the highest, the outputs the last run's."""
        last = runs[-1]
        sets = {
            name: replace(
                s,
                latency_s=np.concatenate([r.sets[name].latency_s for r in runs]),
                compute_s=np.concatenate([r.sets[name].compute_s for r in runs]),
                bytes_sent=np.median(np.stack([r.sets[name].bytes_sent for r in runs]), 0),
            )
            for name, s in last.sets.items()
        }
        rss = np.max([r.rss_bytes for r in runs], 0).tolist()
        return replace(last, rss_bytes=rss, sets=sets, seconds=sum(r.seconds for r in runs))


def collect(plan: RuntimePlan, reports: list[dict], outputs: dict[str, torch.Tensor], link: str, seconds: float) -> RunResult:
    sets = {}
    for s in plan.sets:
        rows = [r["sets"][s.name] for r in reports]  # rank -> request -> figures
        start = np.array([row["start"] for row in rows[0]])
        end = np.array([row["end"] for row in rows[plan.output_rank]])
        busy = np.array([[row["end"] - row["start"] - row["comm"] for row in rank] for rank in rows])  # (ranks, R)
        compute = busy.sum(0) if plan.mode == "pipeline" else busy.max(0)
        sent = np.array([np.median([row["bytes"] for row in rank]) for rank in rows])
        sets[s.name] = SetResult(s.name, s.wire, s.micro_batches, end - start, compute, sent, outputs[s.name])
    return RunResult(
        roles=[r["role"] for r in reports],
        cores=[r["core"] for r in reports],
        param_bytes=[r["param_bytes"] for r in reports],
        rss_bytes=[r["rss_bytes"] for r in reports],
        sets=sets,
        link=link,
        seconds=seconds,
    )
