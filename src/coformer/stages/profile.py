"""Stage ``profile``: measure this machine and resolve the fleet the later stages plan for."""

from __future__ import annotations

import json
from pathlib import Path

from coformer.fleet import ModelDims, Workload, load_fleet
from coformer.fleet.measure import Measurement, local_fleet, profile_machine
from coformer.params import Params
from coformer.tracking import log_outputs, stage_run


def profile_metrics(per_core: Measurement, machine: Measurement | None, devices: int) -> dict:
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
        "fleet_devices": devices,
        "seconds": per_core.seconds + (machine.seconds if machine else 0.0),
    }
    if machine is not None:
        metrics |= {"machine_matmul_gflops": machine.profile.matmul_flops / 1e9, "machine_memory_gbps": machine.profile.memory_bandwidth / 1e9}
    return metrics


def run(params: Params, out: Path) -> dict:
    """``out``: device.json (one core of this machine), fleet.json (``base.fleet`` resolved), metrics.json."""
    section, base = params.profile, params.base
    with stage_run(params, "profile"):
        print(f"profile: measuring this machine at the shapes of {base.model} ({section.batch} x {section.seq_len})", flush=True)
        per_core, machine = profile_machine(
            ModelDims.named(base.model),
            Workload(batch=section.batch, seq_len=section.seq_len),
            core=section.core,
            whole=section.whole_machine,
            repeats=section.repeats,
            statistic=section.statistic,
            active_power_w=section.active_power_w,
            idle_power_w=section.idle_power_w,
        )
        fleet = local_fleet(per_core.profile, section.local_devices) if base.fleet == "local" else load_fleet(base.fleet)
        out.mkdir(parents=True, exist_ok=True)
        (out / "device.json").write_text(per_core.profile.model_dump_json(indent=1))
        fleet.save(out / "fleet.json")
        metrics = profile_metrics(per_core, machine, len(fleet.devices))
        (out / "metrics.json").write_text(json.dumps(metrics, indent=1))
        log_outputs(metrics, [out / "device.json", out / "fleet.json", out / "metrics.json"])
    p = per_core.profile
    print(
        f"profile: one core {p.matmul_flops / 1e9:.1f} GFLOP/s, {p.memory_bandwidth / 1e9:.1f} GB/s, "
        f"{p.block_overhead_s * 1e6:.0f} us/block (chain fit {metrics['core_chain_fit_error']:.1%}); "
        f"fleet '{fleet.name}' with {len(fleet.devices)} devices; {metrics['seconds']:.0f} s",
        flush=True,
    )
    return metrics
