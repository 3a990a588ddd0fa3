"""Slice the canonical full body into one device's sub-model, and build the matching aggregator.

Megatron-LM's vocabulary: q, k, v and FFN-in are *column*-parallel (their output rows are units),
attention-out and FFN-out are *row*-parallel (their input columns are units, their bias belongs to
the residual stream). A narrower stream additionally keeps only some hidden channels, which cuts
the other dimension of every weight that touches the stream.
"""

from __future__ import annotations

import re

import torch

from coformer.adapters import Canonical
from coformer.decompose.policy import DevicePolicy, ModelShape, Policy
from coformer.errors import PolicyError
from coformer.modeling import Aggregator, AggregatorConfig, SubModel, sync_points

# canonical key pattern -> (dim that indexes hidden channels, unit kind, dim that indexes units)
SLICES: list[tuple[str, int | None, str | None, int | None]] = [
    (r"embed\.patch\..*", 0, None, None),
    (r"embed\..*", -1, None, None),
    (r"blocks\.\d+\.norm[12]\..*", 0, None, None),
    (r"blocks\.\d+\.attn\.[qkv]\.weight", 1, "heads", 0),
    (r"blocks\.\d+\.attn\.[qkv]\.bias", None, "heads", 0),
    (r"blocks\.\d+\.attn\.o\.weight", 0, "heads", 1),
    (r"blocks\.\d+\.attn\.o\.bias", 0, None, None),
    (r"blocks\.\d+\.ffn\.fc1\.weight", 1, "neurons", 0),
    (r"blocks\.\d+\.ffn\.fc1\.bias", None, "neurons", 0),
    (r"blocks\.\d+\.ffn\.fc2\.weight", 0, "neurons", 1),
    (r"blocks\.\d+\.ffn\.fc2\.bias", 0, None, None),
    (r"discount", 0, None, None),
]


def shape_of(canonical: Canonical) -> ModelShape:
    c = canonical.config
    return ModelShape(
        num_layers=c.num_layers, num_heads=c.heads_per_block[0], ffn_size=c.neurons_per_block[0], hidden_size=c.width
    )


def unit_rows(kind: str, units: list[int], head_dim: int) -> torch.Tensor:
    """Rows/columns of a weight that belong to the given heads (head_dim each) or neurons."""
    if kind == "neurons":
        return torch.tensor(units, dtype=torch.long)
    return torch.tensor([u * head_dim + j for u in units for j in range(head_dim)], dtype=torch.long)


def slice_state(state: dict[str, torch.Tensor], device: DevicePolicy, channels: list[int], head_dim: int):
    channel_index = torch.tensor(channels, dtype=torch.long)
    out = {}
    for key, tensor in state.items():
        spec = next((s for s in SLICES if re.fullmatch(s[0], key)), None)
        if spec is None:
            raise PolicyError(f"no slicing rule for canonical weight {key!r}; extend SLICES")
        _, channel_dim, kind, unit_dim = spec
        if channel_dim is not None:
            tensor = tensor.index_select(channel_dim % tensor.dim(), channel_index)
        if kind is not None:
            block = int(key.split(".")[1])
            tensor = tensor.index_select(unit_dim, unit_rows(kind, getattr(device, kind)[block], head_dim))
        out[key] = tensor.clone().contiguous()
    return out


def decompose(canonical: Canonical, policy: Policy) -> tuple[list[SubModel], Aggregator]:
    """One sub-model per device plus the aggregator, all initialised from the original weights."""
    shape = shape_of(canonical)
    if policy.shape != shape:
        raise PolicyError(f"the policy was made for a model of shape {policy.shape}, this model is {shape}")
    full = canonical.config
    state = canonical.body.state_dict()
    all_channels = [policy.channels_of(d) for d in policy.devices]
    cover = torch.zeros(full.width)
    for channels in all_channels:
        cover[channels] += 1
    discount = full.norm_position == "pre" and policy.sync != 1
    submodels = []
    for device, channels in zip(policy.devices, all_channels):
        config = full.model_copy(
            update={
                "name": device.name,
                "channels": channels,
                "heads_per_block": [len(h) for h in device.heads],
                "neurons_per_block": [len(n) for n in device.neurons],
                "discount": discount,
            }
        )
        sliced = slice_state(state, device, channels, full.head_dim)
        if discount:
            sliced["discount"] = 1.0 - 1.0 / cover[channels]
        submodels.append(SubModel.from_state_dict(config, sliced).eval())
    aggregator = Aggregator(
        AggregatorConfig(
            hidden_size=full.width,
            device_channels=all_channels,
            merge_points=sync_points(full.num_layers, policy.sync),
            norm_position=full.norm_position,
            head=canonical.head.config,
        )
    )
    aggregator.head.load_state_dict(canonical.head.state_dict())
    aggregator.reset_merges()
    return submodels, aggregator.eval()
