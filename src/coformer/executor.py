"""Reference executor: every sub-model in one process, wired exactly as the deployment wires them.

Notation: N devices, L blocks, B batch, T tokens, d original width, w_k device k's width.

* ``sync == 1`` — tensor parallelism: every device holds the full stream; after each attention and
  each FFN the devices' partial outputs are summed (an all-reduce) and every device applies the
  bias, residual and (post-LN) norm itself. Exact when no unit is dropped.
* ``sync == 0`` — CoFormer: each device embeds the input and runs every block on its own stream;
  the aggregator merges the exports once, then applies final norm and head.
* ``sync == k > 1`` — streams are merged every k blocks; the merged state is sent back and each
  device continues from its channels of it.

A device's side of that flow is ``DeviceRun``; the aggregator's is ``Aggregator.merge`` /
``Aggregator.scatter`` / ``Aggregator.forward``. ``Ensemble`` drives them in one process; the
measurement runtime (one process per device over torch.distributed) and the serving nodes drive
the very same calls over their transports. Calibration, evaluation and serving therefore all run
one data flow, and what is trained is what runs.
"""

from __future__ import annotations

from collections.abc import Sequence
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


class DeviceRun:
    """One device's side of one forward pass: its stream, its attention bias and its KV cache.

    Own streams (``sync != 1``): ``segment`` runs blocks [start, stop) and returns the export sent
    at the sync point; ``receive`` takes the device's channels of the merged state back.
    Tensor parallelism (``sync == 1``): ``attention_partial`` / ``merge_attention`` and the FFN
    twins, the reduction (a sum over devices) happening between the two calls.
    """

    def __init__(self, model: SubModel, inputs: Inputs, cache: KVCache | None = None):
        past = 0 if cache is None else cache.length
        self.model, self.cache = model, cache
        self.x = model.embed(inputs, past)  # (B, T, w)
        self.bias = model.attention_bias(inputs, past)
        self.mask = inputs.get("attention_mask")  # (B, T) what a mean readout averages over
        self.start_state = self.x  # the stream at the last sync point (what the export discounts)

    def block(self, i: int) -> None:
        self.x = self.model.blocks[i](self.x, self.bias, self.cache, i)  # (B, T, w)

    def export(self, start: int, stop: int) -> torch.Tensor:
        """What the device sends after blocks [start, stop): (B, T, w)."""
        return self.model.export(self.x, self.start_state, start, stop)

    def segment(self, start: int, stop: int) -> torch.Tensor:
        for i in range(start, stop):
            self.block(i)
        return self.export(start, stop)

    def receive(self, channels: torch.Tensor) -> None:
        """Continue from the device's channels of the merged state: (B, T, w)."""
        self.x = self.start_state = channels

    def attention_partial(self, i: int) -> torch.Tensor:
        return self.model.blocks[i].attention_partial(self.x, self.bias, self.cache, i)  # (B, T, d)

    def merge_attention(self, i: int, reduced: torch.Tensor) -> None:
        self.x = self.model.blocks[i].merge_attention(self.x, reduced)

    def ffn_partial(self, i: int) -> torch.Tensor:
        return self.model.blocks[i].ffn_partial(self.x)  # (B, T, d)

    def merge_ffn(self, i: int, reduced: torch.Tensor) -> None:
        self.x = self.model.blocks[i].merge_ffn(self.x, reduced)


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
        self,
        inputs: Inputs,
        caches: list[KVCache] | None = None,
        probe: set[int] | frozenset = frozenset(),
        present: Sequence[bool] | None = None,
    ) -> EnsembleOutput:
        """``probe``: block counts after which to also return the merged state, as if synced there.
        ``present``: which devices answer (default all); a missing device's stream or partial sums
        are left out, as the serving aggregator does in degraded mode."""
        present = [True] * len(self.submodels) if present is None else list(present)
        caches = caches or [None] * len(self.submodels)
        runs = [DeviceRun(m, inputs, c) if p else None for m, c, p in zip(self.submodels, caches, present)]
        if self.sync == 1:
            hidden, probes = self._tensor_parallel([r for r in runs if r is not None], probe)
        else:
            hidden, probes = self._streams(runs, probe)
        normed, output = self.aggregator(hidden, inputs.get("attention_mask"))
        return EnsembleOutput(normed, output, probes)

    def _tensor_parallel(self, runs: list[DeviceRun], probe):
        probes = {}
        for i in range(len(runs[0].model.blocks)):
            reduced = sum(r.attention_partial(i) for r in runs)  # all-reduce 1 of block i
            for r in runs:
                r.merge_attention(i, reduced)
            reduced = sum(r.ffn_partial(i) for r in runs)  # all-reduce 2
            for r in runs:
                r.merge_ffn(i, reduced)
            if i + 1 in probe:
                probes[i + 1] = runs[0].x
        return runs[0].x, probes

    def _streams(self, runs: list[DeviceRun | None], probe):
        live = [r for r in runs if r is not None]
        probes = {}
        for point, (start, stop) in enumerate(self.segments):
            for i in range(start, stop):
                for r in live:
                    r.block(i)
                if i + 1 in probe and i + 1 < stop:
                    probes[i + 1] = self._merge(point, runs, start, i + 1)
            merged = self._merge(point, runs, start, stop)  # (B, T, d)
            if stop in probe:
                probes[stop] = merged
            if stop < self.segments[-1][1]:  # the devices continue from their channels of it
                for r, channels in zip(runs, self.aggregator.scatter(merged)):
                    if r is not None:
                        r.receive(channels)
        return merged, probes

    def _merge(self, point: int, runs: list[DeviceRun | None], start: int, stop: int) -> torch.Tensor:
        return self.aggregator.merge(point, [None if r is None else r.export(start, stop) for r in runs])


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
