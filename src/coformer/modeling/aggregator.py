"""The aggregator: combines the devices' streams at each sync point and applies the head.

Notation: N devices, w_k the width of device k's stream, d the original width,
W_k = sum of w_k, B batch, T tokens.

Feature matching (DeViT's ensemble): ``h = W [y_1; ...; y_N] + b`` with ``W`` of shape (d, W_k).
It starts as a scatter: column j of device k's block writes to its original channel c_j. For
pre-LN models the devices already subtracted the start state every stream duplicates (see
``SubModel.export``), so the columns start at 1 and the map is a plain sum of residual updates.
For post-LN models every stream is itself normalised, so each channel starts as the mean of
the streams that carry it. Calibration then learns ``W`` and ``b``.

A device that does not answer (degraded serving) leaves its columns without input. Each merge
keeps a learned correction per device, ``absent_k`` (d,), added when device k's stream is missing:
``h = W [y_1; ...; 0; ...; y_N] + b + sum_{k missing} absent_k``. It starts at zero (a plain
zero-filled merge) and is trained by calibration with device dropout (``calibrate.device_dropout``).
"""

from __future__ import annotations

import torch
from pydantic import BaseModel
from torch import nn

from coformer.modeling.heads import HeadConfig, OutputHead
from coformer.modeling.submodel import NormPosition


class AggregatorConfig(BaseModel):
    hidden_size: int  # d
    device_channels: list[list[int]]  # original channels of every device's stream, in device order
    merge_points: list[int]  # block counts after which the streams are merged (empty for sync 1)
    norm_position: NormPosition  # decides the starting weights of the feature matching
    head: HeadConfig


def sync_points(num_layers: int, sync: int) -> list[int]:
    """Blocks after which devices synchronise: every block for 1, every k for k, once for 0."""
    if sync == 1:
        return []
    step = num_layers if sync == 0 else sync
    return sorted({*range(step, num_layers, step), num_layers})


class FeatureMatching(nn.Module):
    def __init__(self, hidden_size: int, device_channels: list[list[int]]):
        super().__init__()
        self.widths = [len(c) for c in device_channels]
        self.linear = nn.Linear(sum(self.widths), hidden_size)
        self.absent = nn.Parameter(torch.zeros(len(self.widths), hidden_size))  # (N, d) added for a missing stream

    @torch.no_grad()
    def reset_to_scatter(self, device_channels: list[list[int]], average: bool) -> None:
        d = self.linear.out_features
        cover = torch.zeros(d)
        for channels in device_channels:
            cover[channels] += 1
        weight = torch.zeros_like(self.linear.weight)  # (d, W_k)
        offset = 0
        for channels in device_channels:
            idx = torch.tensor(channels)
            cols = torch.arange(offset, offset + len(channels))
            weight[idx, cols] = 1.0 / cover[idx] if average else 1.0
            offset += len(channels)
        self.linear.weight.copy_(weight)
        self.linear.bias.zero_()
        self.absent.zero_()

    def forward(self, outputs: list[torch.Tensor | None]) -> torch.Tensor:
        """``None`` marks a device whose stream is missing: its columns see zeros, its ``absent`` row is added."""
        like = next(o for o in outputs if o is not None)
        filled = [like.new_zeros(*like.shape[:-1], w) if o is None else o for o, w in zip(outputs, self.widths)]
        merged = self.linear(torch.cat(filled, dim=-1))  # (B, T, W_k) -> (B, T, d)
        missing = [k for k, o in enumerate(outputs) if o is None]
        return merged + self.absent[missing].sum(0) if missing else merged

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        """Artifacts saved before the absent correction existed load with it at zero (a zero-filled merge)."""
        state_dict.setdefault(prefix + "absent", torch.zeros_like(self.absent))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


class Aggregator(nn.Module):
    def __init__(self, config: AggregatorConfig):
        super().__init__()
        self.config = config
        self.merges = nn.ModuleList(
            FeatureMatching(config.hidden_size, config.device_channels) for _ in config.merge_points
        )
        self.head = OutputHead(config.head)

    def reset_merges(self) -> None:
        for merge in self.merges:
            merge.reset_to_scatter(self.config.device_channels, average=self.config.norm_position == "post")

    def merge(self, point: int, outputs: list[torch.Tensor | None]) -> torch.Tensor:
        """Combine the devices' exports at sync point number ``point``: (B, T, d).

        A ``None`` export is a device that did not answer (degraded serving, dropout in calibration).
        """
        if all(o is None for o in outputs):
            raise ValueError("no device stream to merge")
        return self.merges[point](outputs)

    def scatter(self, merged: torch.Tensor) -> list[torch.Tensor]:
        """Every device's channels of the merged state, what it continues from: N x (B, T, w_k)."""
        return [merged[..., torch.as_tensor(c, device=merged.device)] for c in self.config.device_channels]

    def forward(self, hidden: torch.Tensor, attention_mask: torch.Tensor | None = None):
        """(final-normed hidden state, model output) from the merged last state."""
        normed = self.head.normed(hidden)
        return normed, self.head(normed, attention_mask)
