"""A device process: ``python -m coformer.runtime.worker <spec.json> <rank>``.

Pins itself to its core and to one torch thread before any torch work, joins the gloo group,
loads its part of the student, and times every request set: a barrier, then one request, its
start and end on the monotonic clock every process shares, time inside transfers and bytes sent.
Writes ``rank<r>.json`` (and, on the output rank, ``outputs.safetensors``) into the run folder.
"""

from __future__ import annotations

import json
import os
import sys
import time
from datetime import timedelta
from pathlib import Path


def main(spec_path: str, rank: int) -> None:
    spec = json.loads(Path(spec_path).read_text())
    os.sched_setaffinity(0, {spec["cores"][rank]})
    import torch

    torch.set_num_threads(1)
    import torch.distributed as dist
    from safetensors.torch import load_file, save_file

    from coformer.runtime import flow
    from coformer.runtime.parts import load_role
    from coformer.runtime.plan import RuntimePlan
    from coformer.runtime.wire import Wire

    plan = RuntimePlan.model_validate(spec["plan"])
    dist.init_process_group(
        "gloo", init_method=spec["init_method"], rank=rank, world_size=plan.world, timeout=timedelta(seconds=spec["timeout_s"])
    )
    role = load_role(plan, rank)
    if plan.gateway and plan.world > 1:  # every rank creates every group, in the same order
        role.group = dist.new_group([plan.device_rank(k) for k in range(plan.devices)])
    requests = load_file(spec["requests"]) if rank == 0 else {}
    wire, timings, outputs = Wire(), {}, {}
    with torch.inference_mode():
        for s in plan.sets:
            request = {k.split("/", 1)[1]: v for k, v in requests.items() if k.startswith(s.name + "/")} or None
            rows = []
            for r in range(plan.warmup + plan.repeats):
                dist.barrier()
                wire.reset(s.wire)
                start = time.perf_counter()  # CLOCK_MONOTONIC: comparable across the processes of one machine
                if plan.mode == "pipeline":
                    out = flow.pipeline(role, wire, request, s.micro_batches)
                else:
                    out = flow.ensemble(role, wire, request)
                end = time.perf_counter()
                if r >= plan.warmup:
                    rows.append({"start": start, "end": end, "comm": wire.seconds, "bytes": wire.bytes})
            timings[s.name] = rows
            if out is not None:
                outputs[s.name] = out.contiguous()
    dist.barrier()
    folder = Path(spec["folder"])
    if outputs:
        save_file(outputs, folder / "outputs.safetensors")
    report = {
        "rank": rank,
        "role": role.name,
        "core": spec["cores"][rank],
        "param_bytes": role.parameter_bytes(),
        "rss_bytes": peak_rss(),
        "sets": timings,
    }
    dist.destroy_process_group()
    tmp = folder / f"rank{rank}.json.tmp"
    tmp.write_text(json.dumps(report))
    tmp.replace(folder / f"rank{rank}.json")  # atomic: the launcher reads it once it exists


def peak_rss() -> int:
    """Peak resident bytes of this process since its exec (``VmHWM``; ``ru_maxrss`` would carry
    over the parent's peak from before the fork)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
