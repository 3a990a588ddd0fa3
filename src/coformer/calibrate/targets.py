"""The frozen teacher's targets, computed once per calibration batch and reused for the whole run.

The teacher never changes during calibration and the calibration batches are fixed, so every
repeat visit of a batch (later epochs, later stages) would recompute the same forward pass: on a
small CPU box that is about a quarter of every step. While there is room in
``calibrate.teacher_cache_gib``, the first visit of a batch runs the full teacher with probes at
every depth the plan aligns, so one entry serves all stages. Once the budget is spent (LM logits
over a large vocabulary fill it soon), batches not kept are computed per visit by the stage's own,
possibly shallower, teacher view, exactly as without a cache.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from coformer.executor import Teacher

BATCH_INDEX = "batch_index"  # a calibration batch's position in the run's fixed list (not a model input)


@dataclass(frozen=True)
class Targets:
    output: torch.Tensor  # the teacher's output: logits, pooled embedding or token states
    probes: dict[int, torch.Tensor]  # block count -> the teacher's hidden state there (B, T, d)

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.output, *self.probes.values()))


class TeacherTargets:
    def __init__(self, teacher: Teacher, depths: set[int], budget_gib: float):
        self.teacher, self.depths = teacher, frozenset(depths)
        self.budget, self.used = int(budget_gib * 2**30), 0
        self.store: dict[int, Targets] = {}

    @torch.no_grad()
    def __call__(self, index: int | None, inputs: dict[str, torch.Tensor], view: Teacher, depths: set[int]) -> Targets:
        """Targets for the batch at ``index`` (None: never cached); ``view`` and ``depths`` are the
        stage's teacher and aligned depths, used when the batch is not kept."""
        if index in self.store:
            return self.store[index]
        if index is None or self.used >= self.budget:
            out = view(inputs, probe=depths)
            return Targets(out.output, out.probes)
        out = self.teacher(inputs, probe=self.depths)
        targets = Targets(out.output, out.probes)
        if self.used + targets.nbytes <= self.budget:
            self.store[index], self.used = targets, self.used + targets.nbytes
        else:
            self.budget = self.used  # full: later misses run the stage's own view
        return targets
