"""DVC stage `profile`: measure this machine and resolve the fleet the later stages plan for.

Reads `base` (model, fleet, tracking) and `profile` from params.yaml and writes `outputs/profile/`:
device.json (this machine as one device per core), fleet.json (`base.fleet` resolved from the
catalog or a file; `local` builds it from this machine's cores) and metrics.json. Logs one MLflow run.
"""

from __future__ import annotations

import json
from pathlib import Path

from pipelines.common import load_params, mlflow_run, run_stage

from coformer.fleet import ModelDims, Workload, load_fleet
from coformer.fleet.measure import Measurement, local_fleet, profile_machine

OUT = Path("outputs/profile")


def metrics_of(per_core: Measurement, machine: Measurement | None, fleet) -> dict:
    p = per_core.profile
    metrics = {
        "core_matmul_gflops": p.matmul_flops / 1e9,
        "core_memory_gbps": p.memory_bandwidth / 1e9,
        "core_weight_gbps": (p.weight_bandwidth or p.memory_bandwidth) / 1e9,
        "core_stream_gbps": per_core.stream_bandwidth / 1e9,
        "core_block_overhead_us": p.block_overhead_s * 1e6,
        "core_forward_overhead_us": p.forward_overhead_s * 1e6,
        "core_chain_fit_error": per_core.block_error(),
        "loopback_mbps": p.link_bandwidth / 1e6,
        "loopback_rtt_us": p.link_rtt_s * 1e6,
        "fleet_devices": len(fleet.devices),
        "seconds": per_core.seconds + (machine.seconds if machine else 0.0),
    }
    if machine is not None:
        metrics |= {"machine_matmul_gflops": machine.profile.matmul_flops / 1e9, "machine_memory_gbps": machine.profile.memory_bandwidth / 1e9}
    return metrics


def log_mlflow(params: dict, metrics: dict, base: dict) -> None:
    import mlflow

    with mlflow_run(base, "profile"):
        mlflow.log_params(params)
        mlflow.log_metrics(metrics)
        for name in ("device.json", "fleet.json", "metrics.json"):
            mlflow.log_artifact(str(OUT / name), artifact_path="profile")


def main() -> None:
    base, _, section = load_params("profile")
    dims = ModelDims.named(base["model"])
    workload = Workload(batch=section.get("batch", 1), seq_len=section.get("seq_len", 128))
    print(f"profile: measuring this machine at the shapes of {base['model']} ({workload.batch} x {workload.seq_len})", flush=True)
    per_core, machine = profile_machine(
        dims,
        workload,
        core=section.get("core"),
        whole=section.get("whole_machine", True),
        repeats=section.get("repeats", 7),
        statistic=section.get("statistic", "min"),
        active_power_w=section.get("active_power_w", 0.0),
        idle_power_w=section.get("idle_power_w", 0.0),
    )
    fleet = local_fleet(per_core.profile, section.get("local_devices")) if base["fleet"] == "local" else load_fleet(base["fleet"])
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "device.json").write_text(per_core.profile.model_dump_json(indent=1))
    fleet.save(OUT / "fleet.json")
    metrics = metrics_of(per_core, machine, fleet)
    (OUT / "metrics.json").write_text(json.dumps(metrics, indent=1))
    log_mlflow({f"profile.{k}": v for k, v in section.items()} | {"model": base["model"], "fleet": base["fleet"]}, metrics, base)
    p = per_core.profile
    print(
        f"profile: one core {p.matmul_flops / 1e9:.1f} GFLOP/s, {p.memory_bandwidth / 1e9:.1f} GB/s, "
        f"{p.block_overhead_s * 1e6:.0f} us/block (chain fit {metrics['core_chain_fit_error']:.1%}); "
        f"fleet '{fleet.name}' with {len(fleet.devices)} devices; {metrics['seconds']:.0f} s"
    )


if __name__ == "__main__":
    run_stage(main)
