"""Turn shares (what fraction of the model each device should carry) into an explicit policy.

Per block, units are ranked by importance, the least important ``1 - keep`` are dropped, and the
rest are dealt to devices in proportion to their shares (largest remainder, so counts are exact
and uneven where the devices are). Two dealing rules:

* ``balanced``: devices take turns down the ranking, each always taking from the top while it is
  furthest below its quota, so every device gets a mix of important and unimportant units;
* ``grouped``: the first device takes the most important block of units, the next the following.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import BaseModel, Field

from coformer.decompose.importance import Importance
from coformer.decompose.policy import DevicePolicy, ModelShape, Policy
from coformer.errors import PolicyError

Dealing = Literal["balanced", "grouped"]


class DeviceShare(BaseModel):
    name: str
    heads: float = Field(ge=0)  # relative share of the kept heads (normalised across devices)
    neurons: float = Field(ge=0)  # relative share of the kept FFN neurons
    channels: float = Field(default=1.0, gt=0, le=1)  # fraction of hidden channels its stream keeps


def quotas(total: int, shares: list[float]) -> list[int]:
    """Split ``total`` items in proportion to ``shares`` exactly (largest remainder)."""
    weight = sum(shares)
    if weight <= 0:
        return [0] * len(shares)
    exact = [total * s / weight for s in shares]
    counts = [int(e) for e in exact]
    order = sorted(range(len(shares)), key=lambda k: (counts[k] - exact[k], k))
    for k in order[: total - sum(counts)]:
        counts[k] += 1
    return counts


def block_quotas(total: int, shares: list[float], blocks: int) -> list[list[int]]:
    """Per-block quotas whose sums over blocks stay proportional too.

    Rounding the same split in every block would hand one device the same extra unit L times;
    instead each block splits in proportion to what every device is still owed.
    """
    weight = sum(shares)
    assigned = [0] * len(shares)
    per_block = []
    for b in range(1, blocks + 1):
        owed = [max(0.0, b * total * s / weight - a) if weight > 0 else 0.0 for s, a in zip(shares, assigned)]
        counts = quotas(total, owed)
        assigned = [a + c for a, c in zip(assigned, counts)]
        per_block.append(counts)
    return per_block


def deal(ranked: list[int], counts: list[int], dealing: Dealing) -> list[list[int]]:
    """Deal ranked unit indices (most important first) into ``len(counts)`` sorted groups."""
    groups: list[list[int]] = [[] for _ in counts]
    if dealing == "grouped":
        start = 0
        for k, n in enumerate(counts):
            groups[k] = ranked[start : start + n]
            start += n
    else:
        for unit in ranked:
            k = max(
                (k for k, n in enumerate(counts) if len(groups[k]) < n),
                key=lambda k: (1 - len(groups[k]) / counts[k], -k),
            )
            groups[k].append(unit)
    return [sorted(g) for g in groups]


def top(scores: torch.Tensor, n: int) -> list[int]:
    """Indices of the ``n`` highest scores, highest first; ties broken by index for determinism."""
    order = sorted(range(len(scores)), key=lambda i: (-float(scores[i]), i))
    return order[:n]


def build_policy(
    shape: ModelShape,
    importance: Importance,
    shares: list[DeviceShare],
    keep: float = 1.0,
    sync: int = 0,
    dealing: Dealing = "balanced",
) -> Policy:
    if not 0 < keep <= 1:
        raise PolicyError(f"kept fraction keep={keep} must be in (0, 1]")
    if not shares:
        raise PolicyError("no devices to deal units to")
    per_device: list[dict[str, list]] = [{"heads": [], "neurons": []} for _ in shares]
    for kind, scores, size in (
        ("heads", importance.heads, shape.num_heads),
        ("neurons", importance.neurons, shape.ffn_size),
    ):
        kept = max(1, round(keep * size))
        counts = block_quotas(kept, [getattr(s, kind) for s in shares], shape.num_layers)
        for b in range(shape.num_layers):
            for k, group in enumerate(deal(top(scores[b], kept), counts[b], dealing)):
                per_device[k][kind].append(group)
    devices = []
    for share, units in zip(shares, per_device):
        width = round(share.channels * shape.hidden_size)
        channels = None if width >= shape.hidden_size else sorted(top(importance.channels, max(1, width)))
        devices.append(DevicePolicy(name=share.name, channels=channels, **units))
    return Policy(shape=shape, sync=sync, devices=devices)
