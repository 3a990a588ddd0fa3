"""Measurement runtime: every method as real processes, one per device, over torch.distributed (gloo).

``run_plan`` starts one process per rank (pinned to a core, one torch thread), runs the student
folder's data flow (``coformer.executor``'s calls over gloo) or a layer-wise pipeline of the full
model, and returns latencies, bytes, memory and outputs; ``network.shaped`` puts the processes
behind real rate-limited links.
"""

from coformer.runtime.launch import Zygote, run_plan
from coformer.runtime.network import Network, loopback, shaped, shaping_unavailable
from coformer.runtime.plan import RequestSet, RuntimeFailure, RuntimePlan
from coformer.runtime.results import RunResult, SetResult

__all__ = [
    "Network",
    "Zygote",
    "RequestSet",
    "RunResult",
    "RuntimeFailure",
    "RuntimePlan",
    "SetResult",
    "loopback",
    "run_plan",
    "shaped",
    "shaping_unavailable",
]
