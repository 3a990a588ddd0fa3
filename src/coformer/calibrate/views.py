"""Depth-truncated views of the student and the teacher that share their modules (no copies).

An alignment stage only needs the merged state after block g. Running the executor on the first
g blocks gives exactly the ``probe={g}`` state of the full ensemble (same code, same merge, same
export discount) without computing the blocks after g or the head, so early stages cost g/L of a
full step. ``test_calibrate`` checks the equality.
"""

from __future__ import annotations

import torch

from coformer.executor import Ensemble, Teacher
from coformer.modeling import Aggregator, HeadConfig, OutputHead, SubModel


def first_blocks(sub: SubModel, depth: int) -> SubModel:
    """A sub-model made of ``sub``'s embeddings and its first ``depth`` blocks (shared, not copied)."""
    c = sub.config
    config = c.model_copy(update={"heads_per_block": c.heads_per_block[:depth], "neurons_per_block": c.neurons_per_block[:depth]})
    with torch.device("meta"):  # a shell without blocks; every module is then shared from `sub`
        view = SubModel(c.model_copy(update={"heads_per_block": [], "neurons_per_block": []}))
    view.config = config
    view.embed = sub.embed
    view.blocks = torch.nn.ModuleList(sub.blocks[:depth])
    view.discount = sub.discount
    view.channel_index = sub.channel_index
    return view


def identity_head(hidden_size: int) -> HeadConfig:
    return HeadConfig(hidden_size=hidden_size, final_norm=False)


def merge_only(aggregator: Aggregator, depth: int) -> Aggregator:
    """The aggregator's merges up to block ``depth`` with an identity head (no norm, pooling or projection)."""
    points = [p for p in aggregator.config.merge_points if p < depth] + ([depth] if aggregator.config.merge_points else [])
    head = identity_head(aggregator.config.hidden_size)
    with torch.device("meta"):
        view = Aggregator(aggregator.config.model_copy(update={"merge_points": points, "head": head}))
    view.merges = torch.nn.ModuleList(aggregator.merges[: len(points)])
    return view


def student_view(student: Ensemble, depth: int) -> Ensemble:
    """The student's executor over its first ``depth`` blocks; ``probes[depth]`` is the merged state."""
    subs = [first_blocks(m, depth) for m in student.submodels]
    return Ensemble(subs, merge_only(student.aggregator, depth), student.sync)


def teacher_view(teacher: Teacher, depth: int) -> Teacher:
    """The teacher over its first ``depth`` blocks, with an identity head; ``probes[depth]`` is its state."""
    return Teacher(first_blocks(teacher.body, depth), OutputHead(identity_head(teacher.body.config.hidden_size)))
