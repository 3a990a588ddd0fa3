"""Parameter accounting: what each device stores, and which of it every device duplicates.

Unit weights (per-head q/k/v/out, per-neuron FFN in/out) are split between devices; the rest
(embeddings, norms, row-parallel biases) is replicated on every device that needs it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from coformer.decompose.slicing import SLICES
from coformer.modeling import SubModel

UNIT_KEYS = [re.compile(pattern) for pattern, _, kind, _ in SLICES if kind is not None]


@dataclass(frozen=True)
class DeviceParameters:
    name: str
    unit: int  # parameters of the heads and neurons this device holds
    shared: int  # parameters it replicates (embeddings, norms, output biases)
    bytes: int  # bytes of all its parameters and buffers

    @property
    def total(self) -> int:
        return self.unit + self.shared


def device_parameters(sub: SubModel) -> DeviceParameters:
    unit = shared = 0
    for key, p in sub.named_parameters():
        if any(r.fullmatch(key) for r in UNIT_KEYS):
            unit += p.numel()
        else:
            shared += p.numel()
    size = sum(t.numel() * t.element_size() for t in sub.state_dict().values())
    return DeviceParameters(sub.config.name, unit, shared, size)
