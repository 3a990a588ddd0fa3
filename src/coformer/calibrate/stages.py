"""The progressive schedule: which blocks a stage runs, aligns and trains.

Notation: L blocks, g the group size. An optional least-squares warm start refits every block in
closed form (``warmstart``); alignment stage t then runs blocks [0, min(t*g, L)) and aligns the
merged states at every group boundary up to there (g, 2g, ...) with the teacher's by gradient
steps, so earlier groups keep their alignment while later ones learn; the final stage runs
everything, distils outputs and keeps aligning every boundary (weighted by ``hidden_weight``): a
sentence embedding is one vector per text, the token states at every boundary are far more signal
(held-out cosine 0.896 with the output loss alone, 0.911 with the last boundary, 0.917 with all
three, after 300 steps).

Trainable per stage: the embeddings (minus the token tables when frozen) and the blocks the stage
runs, of every sub-model. The aggregator's merges train in the final stage; in alignment stages
only when ``train_merges`` is set. At s = 0 one merge serves every depth (a probe is "as if synced
there"), so fitting it to an early block only for a later stage to pull it back wastes steps; the
blocks themselves carry the alignment instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from coformer.calibrate.config import CalibrationConfig
from coformer.executor import Ensemble


StageKind = Literal["least-squares", "align", "distill"]


@dataclass(frozen=True)
class Stage:
    kind: StageKind  # closed-form warm start, hidden-state alignment, or output distillation
    depth: int  # blocks the stage runs (an alignment stage aligns the boundary after its last block, too)
    steps: int  # optimizer steps (0 for the closed-form warm start)
    aligned: tuple[int, ...] = ()  # block counts whose merged state is aligned with the teacher's

    @property
    def final(self) -> bool:
        return self.kind == "distill"

    @property
    def name(self) -> str:
        return {"least-squares": "lsq", "align": f"align{self.depth}", "distill": "distill"}[self.kind]


def plan(num_layers: int, config: CalibrationConfig) -> list[Stage]:
    """Stages in order; gradient stages with no steps are left out (``steps_per_stage: 0`` and
    ``warm_start: false`` = one-shot output distillation)."""
    stages = [Stage("least-squares", num_layers, 0)] if config.warm_start else []
    boundaries = sorted({*range(config.group_size, num_layers, config.group_size), num_layers})
    if config.steps_per_stage:
        stages += [Stage("align", d, config.steps_per_stage, tuple(b for b in boundaries if b <= d)) for d in boundaries]
    if config.final_steps:
        stages.append(Stage("distill", num_layers, config.final_steps, tuple(boundaries) if config.hidden_weight else ()))
    return stages


def set_trainable(student: Ensemble, stage: Stage, config: CalibrationConfig) -> int:
    """Freeze everything the stage must not change; returns the number of trainable parameters."""
    student.requires_grad_(False)
    for sub in student.submodels:
        sub.embed.requires_grad_(True)
        if config.freeze_embeddings and sub.embed.vocabulary is not None:
            sub.embed.vocabulary.requires_grad_(False)
        for block in sub.blocks[: stage.depth]:
            block.requires_grad_(True)
    if stage.final or config.train_merges:
        student.aggregator.merges.requires_grad_(True)
    if stage.final:
        student.aggregator.head.requires_grad_(True)
    return sum(p.numel() for p in student.parameters() if p.requires_grad)
