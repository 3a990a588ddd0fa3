"""Reference executor: every sub-model in one process, wired exactly as the deployment wires them.

Notation: N devices, L blocks, B batch, T tokens, d original width.

* ``sync == 1`` — tensor parallelism: every device holds the full stream; after each attention and
  each FFN the devices' partial outputs are summed (an all-reduce) and the bias, residual and
  (post-LN) norm are applied once. Exact when no unit is dropped.
* ``sync == 0`` — CoFormer: each device embeds the input and runs every block on its own stream;
  the aggregator merges the exports once, then applies final norm and head.
* ``sync == k > 1`` — streams are merged every k blocks; the merged state is sent back and each
  device continues from its channels of it.

Calibration, evaluation and serving all go through this data flow, so what is trained is what runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from coformer.modeling import Aggregator, KVCache, SubModel, sync_points

Inputs = dict[str, torch.Tensor]


@dataclass
class EnsembleOutput:
    hidden: torch.Tensor  # (B, T, d) final-normed last hidden state
    output: torch.Tensor  # the model's output: logits, pooled embedding or token states
    probes: dict[int, torch.Tensor] = field(default_factory=dict)  # block count -> merged state (B, T, d)


class Ensemble(nn.Module):
    """The student: sub-models plus aggregator under one sync interval."""

    def __init__(self, submodels: list[SubModel], aggregator: Aggregator, sync: int):
        super().__init__()
        self.submodels = nn.ModuleList(submodels)
        self.aggregator = aggregator
        self.sync = sync
        self.segments = segments(submodels[0].config.num_layers, sync)

    def new_caches(self) -> list[KVCache]:
        return [m.new_cache() for m in self.submodels]

    def forward(
        self, inputs: Inputs, caches: list[KVCache] | None = None, probe: set[int] | frozenset = frozenset()
    ) -> EnsembleOutput:
        """``probe``: block counts after which to also return the merged state, as if synced there."""
        if self.sync == 1:
            hidden, probes = self._tensor_parallel(inputs, caches, probe)
        else:
            hidden, probes = self._streams(inputs, caches, probe)
        normed, output = self.aggregator(hidden, inputs.get("attention_mask"))
        return EnsembleOutput(normed, output, probes)

    def _tensor_parallel(self, inputs, caches, probe):
        caches = caches or [None] * len(self.submodels)
        lead = self.submodels[0]  # every device computes the same embedding and merges identically
        past = 0 if caches[0] is None else caches[0].length
        x = lead.embed(inputs, past)  # (B, T, d)
        bias = lead.attention_bias(inputs, past)
        probes = {}
        for i, block in enumerate(lead.blocks):
            partial = sum(m.blocks[i].attention_partial(x, bias, c, i) for m, c in zip(self.submodels, caches))
            x = block.merge_attention(x, partial)  # all-reduce 1 of block i
            x = block.merge_ffn(x, sum(m.blocks[i].ffn_partial(x) for m in self.submodels))  # all-reduce 2
            if i + 1 in probe:
                probes[i + 1] = x
        return x, probes

    def _streams(self, inputs, caches, probe):
        caches = caches or [None] * len(self.submodels)
        past = 0 if caches[0] is None else caches[0].length
        streams = [m.embed(inputs, past) for m in self.submodels]  # N x (B, T, w_k)
        biases = [m.attention_bias(inputs, past) for m in self.submodels]
        probes = {}
        for point, (start, stop) in enumerate(self.segments):
            starts = streams
            for i in range(start, stop):
                streams = [m.blocks[i](x, b, c, i) for m, x, b, c in zip(self.submodels, streams, biases, caches)]
                if i + 1 in probe and i + 1 < stop:
                    probes[i + 1] = self._merge(point, streams, starts, start, i + 1)
            merged = self._merge(point, streams, starts, start, stop)  # (B, T, d)
            if stop in probe:
                probes[stop] = merged
            streams = [merged[..., m.channel_index] for m in self.submodels]
        return merged, probes

    def _merge(self, point, streams, starts, start, stop):
        exports = [m.export(x, s, start, stop) for m, x, s in zip(self.submodels, streams, starts)]
        return self.aggregator.merge(point, exports)


def segments(num_layers: int, sync: int) -> list[tuple[int, int]]:
    """Block ranges [start, stop) run between two sync points (empty for tensor parallelism)."""
    stops = sync_points(num_layers, sync)
    return list(zip([0, *stops[:-1]], stops))


class Teacher(nn.Module):
    """The original model in canonical form, with the hidden state after every block on request."""

    def __init__(self, body: SubModel, head):
        super().__init__()
        self.body, self.head = body, head

    def forward(self, inputs: Inputs, cache: KVCache | None = None, probe=frozenset()) -> EnsembleOutput:
        past = 0 if cache is None else cache.length
        x = self.body.embed(inputs, past)
        bias = self.body.attention_bias(inputs, past)
        probes = {}
        for i, block in enumerate(self.body.blocks):
            x = block(x, bias, cache, i)
            if i + 1 in probe:
                probes[i + 1] = x
        normed = self.head.normed(x)
        return EnsembleOutput(normed, self.head(normed, inputs.get("attention_mask")), probes)
