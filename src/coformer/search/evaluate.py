"""Price and measure one candidate: ``T`` and memory from the cost model, ``D`` from a real forward pass.

Notation: N devices taking part, B batch, T tokens.

The evaluator is built once in the driver (unit importance, the teacher's outputs on the measured
texts and its states on the fit texts are computed there) and reaches the trials once, through
Ray's object store: a trial needs no file of the driver's machine.
Memory is checked first: a candidate that overflows a device is not run, its ``D`` stays unknown.
``D`` is the calibration-aware estimate of ``search.degradation`` (see ``refit.py``); the
uncalibrated ``D`` is reported beside it.
"""

from __future__ import annotations

import math
import time

import torch

from coformer.adapters import Canonical
from coformer.decompose import Importance, Policy, build_policy, compute_importance, decompose, shape_of
from coformer.executor import Ensemble, Teacher
from coformer.fleet.cost import CostReport, ModelDims, UnitCounts, Workload, estimate
from coformer.fleet.profile import Fleet
from coformer.modeling import sync_points
from coformer.search.config import SearchConfig, SearchConfigError
from coformer.search.degradation import measure
from coformer.search.refit import calibrated_outputs, split_rows
from coformer.search.space import Candidate

MIB = 2.0**20
# The searcher needs finite values for every trial; infeasible ones get these stand-ins (and a
# positive constraint, so TPE ranks them below every feasible trial). The table keeps NaN.
SEARCH_METRICS = ["search_latency_ms", "search_degradation"]
UNMEASURED_D = 1e3  # stand-in D of a trial that was not run
NO_DEVICE_T = 1e9  # stand-in T (ms) of a point where no device takes part
NO_DEVICE_OVERFLOW = 2.0**40  # its constraint value: worse than any real overflow


class Pricer:
    """``T`` and memory of candidates from the cost model: needs the model's shapes, no data.

    Which units a device gets does not change its cost, only how many, so any ranking serves.
    """

    def __init__(self, canonical: Canonical, fleet: Fleet, workload: Workload, importance: Importance):
        self.canonical, self.fleet, self.workload, self.importance = canonical, fleet, workload, importance
        self.shape = shape_of(canonical)
        self.dims = ModelDims.from_canonical(canonical)

    def policy(self, candidate: Candidate) -> Policy:
        c = candidate
        return build_policy(self.shape, self.importance, list(c.shares), c.keep, c.sync, c.dealing)

    def cost(self, candidate: Candidate, policy: Policy | None = None) -> CostReport:
        """The cost model on the sub-fleet of the devices that take part (same order as the policy).

        A single model is priced as one stream sent once (s = 0): the cost model would price its
        s = 1 as all-reduces after every sub-layer, a network a lone device never uses. The merge
        it then adds is one (d, d) product on the aggregator, under 1 % of a forward pass here.
        """
        policy = policy or self.policy(candidate)
        fleet = self.fleet.subset(candidate.names)
        counts = UnitCounts.from_policy(policy)
        if policy.single:
            counts = UnitCounts(counts.heads, counts.neurons, counts.widths, sync=0)
        return estimate(counts, self.dims, fleet, self.workload)


class Evaluator(Pricer):
    """Prices candidates and measures the feasible ones against the teacher on fixed batches.

    The first ``config.fit_texts`` rows of ``batches`` fit the calibration-aware refit (and rank the
    units); ``D`` is measured on the rest. With ``degradation: uncalibrated`` every row is measured.
    """

    def __init__(self, canonical: Canonical, batches: list[dict], fleet: Fleet, config: SearchConfig):
        self.estimate = config.degradation
        fit, measured = split_rows(batches, config.fit_texts) if self.estimate != "uncalibrated" else (batches, batches)
        if not measured:
            raise SearchConfigError(
                f"search.fit_texts={config.fit_texts} takes every calibration text given, none is left to measure D on; "
                "give more texts (search.texts) or lower search.fit_texts"
            )
        with torch.no_grad():
            super().__init__(canonical, fleet, config.workload(), compute_importance(canonical.body, config.importance, fit))
            self.teacher = Teacher(canonical.body, canonical.head).eval()
            self.targets = [self.teacher(b).output for b in measured]  # per batch (B, ...) the teacher's outputs
            L = canonical.config.num_layers
            depths = {p for s in config.sync for p in sync_points(L, min(s, L))} | {L}
            # The teacher's state wherever a merge can sit (block count -> (B, T, d)) on the fit texts.
            self.states = [self.teacher(b, probe=depths).probes for b in fit] if self.estimate != "uncalibrated" else []
        self.fit, self.batches = fit, measured

    @torch.no_grad()
    def degradation(self, policy: Policy) -> tuple[float, float]:
        """(uncalibrated D, D after the refit of ``search.degradation``) of the policy's student."""
        student = Ensemble(*decompose(self.canonical, policy), sync=policy.sync).eval()
        raw = self.measure(lambda b: student(b).output)
        if self.estimate == "uncalibrated":
            return raw, raw
        return raw, self.measure(calibrated_outputs(student, self.estimate, self.teacher, self.fit, self.states))

    def measure(self, output) -> float:
        outputs = [output(b) for b in self.batches]
        return measure(outputs, self.targets, self.canonical.head.config, [b.get("attention_mask") for b in self.batches])

    def evaluate(self, candidate: Candidate) -> dict:
        """One trial's metrics: T (ms), D, feasibility, memory per device, and the searcher's values."""
        start = time.perf_counter()
        row = {"devices": "+".join(candidate.names), "method": candidate.method if candidate.shares else "", "sync": candidate.sync}
        row |= {"feasible": False, "reason": ""}
        row |= {"latency_ms": math.nan, "degradation": math.nan, "degradation_uncalibrated": math.nan}
        row |= {"comm_kib": math.nan, "energy_mj": math.nan}
        row |= {"overflow_device": "", "overflow_mib": 0.0, "overflow_bytes": 0.0}
        row |= {f"mem_mib.{name}": math.nan for name in self.fleet.names}
        if not candidate.shares:
            row |= {"reason": "no device takes part", "overflow_bytes": NO_DEVICE_OVERFLOW}
            row |= dict(zip(SEARCH_METRICS, (NO_DEVICE_T, UNMEASURED_D)))
            return row | {"eval_s": time.perf_counter() - start}
        policy = self.policy(candidate)
        report = self.cost(candidate, policy)
        row |= {f"mem_mib.{n}": float(m) / MIB for n, m in zip(candidate.names, report.memory_bytes)}
        row |= {"latency_ms": report.latency_s * 1e3, "comm_kib": report.comm_bytes / 1024, "energy_mj": report.energy_j * 1e3}
        if report.feasible:
            raw, estimated = self.degradation(policy)
            row |= {"feasible": True, "degradation": estimated, "degradation_uncalibrated": raw}
            row |= dict(zip(SEARCH_METRICS, (row["latency_ms"], row["degradation"])))
        else:
            device, over = max(report.overflow, key=lambda o: o[1])
            row |= {"reason": "out of memory", "overflow_device": device, "overflow_mib": over / MIB}
            row |= {"overflow_bytes": float(sum(o[1] for o in report.overflow))}
            row |= dict(zip(SEARCH_METRICS, (row["latency_ms"], UNMEASURED_D)))
        return row | {"eval_s": time.perf_counter() - start}
