"""The cost model's side of the evaluation: its prediction beside every measured latency, every
method on the configured fleet, and GPT2-XL on the paper-like fleet next to the paper's claims."""

from __future__ import annotations

from coformer.decompose import Policy
from coformer.evaluation.methods import Method, local_fleet_of
from coformer.fleet import DeviceProfile, Fleet, ModelDims, UnitCounts, Workload, estimate, estimate_pipeline, load_fleet
from coformer.fleet.compare import compare_regimes

PAPER_CLAIMS = {"speedup": 3.1, "memory_change": -0.763, "energy_change": -0.40}  # Xu et al., IEEE TC 2025 (abstract)


def predict_measured(method: Method, dims: ModelDims, profile: DeviceProfile, workload: Workload, rate_mbit: float | None) -> float:
    """Predicted seconds of one request of ``method`` on this machine's cores, on the given link."""
    fleet = local_fleet_of(profile, method.devices, rate_mbit, method.gateway)
    if method.mode == "pipeline":
        return estimate_pipeline(dims, fleet, workload, list(method.stages)).latency_s
    counts = UnitCounts.full(dims) if method.key == "full" else UnitCounts.from_policy(method.policy)
    return estimate(counts, dims, fleet, workload).latency_s


def report_row(name: str, devices: list[str], report, full_latency: float) -> dict:
    return {
        "method": name,
        "devices": len(devices),
        "latency_ms": report.latency_s * 1e3,
        "speedup": full_latency / report.latency_s,
        "memory_max_mb": float(report.memory_bytes.max()) / 1e6,
        "energy_j": report.energy_j,
        "traffic_mb": report.comm_bytes / 1e6,
        "fits": report.feasible,
    }


def fleet_rows(dims: ModelDims, fleet: Fleet, workload: Workload, single: tuple[str, float] | None, searched: Policy | None) -> list[dict]:
    """Every method on the target fleet, by the cost model (its regimes, plus Single-Edge where a
    one-device model fits, and the search's policy)."""
    regimes = compare_regimes(dims, fleet, workload)
    full = regimes[0].report.latency_s
    keys = ["full", "aggregate-edge", "distri-edge", "pipe-edge"]
    rows = [report_row(k, r.devices, r.report, full) | {"regime": r.name} for k, r in zip(keys, regimes)]
    if single is not None:
        name, keep = single
        report = estimate(UnitCounts.split(dims, [1.0], sync=0, keep=keep), dims, fleet.single(name), workload)
        rows.append(report_row("single-edge", [name], report, full) | {"regime": f"one model on {name}, keep {keep:g}"})
    names = [d.name for d in searched.devices] if searched is not None else []
    if names and set(names) <= set(fleet.names):
        sub = fleet.subset(names, aggregator=fleet.aggregator.name if fleet.aggregator.name in names else None)
        report = estimate(UnitCounts.from_policy(searched), dims, sub, workload)
        rows.append(report_row("coformer", names, report, full) | {"regime": f"searched policy (s={searched.sync})"})
    return rows


def paper_rows(keep: float = 0.75, channels: float = 0.5) -> dict:
    """GPT2-XL (fp16, 128-token prompt, 32 generated) on the paper-like fleet: CoFormer against the
    full model and the best baseline, plain and with compressed sub-models, beside the paper's claims."""
    dims = ModelDims.named("gpt2-xl", bytes_per_param=2)
    fleet, workload = load_fleet("paper"), Workload(batch=1, seq_len=128, decode_tokens=32)
    regimes = compare_regimes(dims, fleet, workload)
    compressed = compare_regimes(dims, fleet, workload, keep=keep, channels=channels)[1]
    full, coformer, tensor, pipeline = (r.report for r in regimes)
    out = {"claims": PAPER_CLAIMS}
    for label, ours in (("coformer", coformer), ("coformer_compressed", compressed.report)):
        best_baseline = min(full.latency_s, tensor.latency_s, pipeline.latency_s)
        out[label] = {
            "speedup_vs_full": full.latency_s / ours.latency_s,
            "speedup_vs_best_baseline": best_baseline / ours.latency_s,
            "memory_change": float(ours.memory_bytes.max() / full.memory_bytes[0] - 1),
            "energy_change": ours.energy_j / full.energy_j - 1,
        }
    out["compressed"] = {"keep": keep, "channels": channels}
    return out
