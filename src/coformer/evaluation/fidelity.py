"""Teacher-relative fidelity of a student's outputs on held-out batches.

Notation: B batch, T tokens, V vocabulary. Cosine of outputs (per sequence for pooled outputs,
per real token otherwise) for every model; KL(teacher || student) of the logits when the model
has an LM or classifier head.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn.functional as F

from coformer.executor import Ensemble, Teacher


@torch.no_grad()
def output_fidelity(teacher: Teacher, student: Ensemble, batches: Iterable[dict[str, torch.Tensor]]) -> dict[str, float]:
    projection = student.aggregator.config.head.projection
    cos_sum, kl_sum, count = 0.0, 0.0, 0.0
    for batch in batches:
        t, s = teacher(batch).output, student(batch).output  # (B, [T,] .)
        weights = torch.ones(t.shape[:-1])  # (B,) or (B, T)
        if t.dim() == 3 and "attention_mask" in batch:
            weights = batch["attention_mask"].to(t.dtype)
        cos_sum += float((F.cosine_similarity(s, t, dim=-1) * weights).sum())
        if projection != "none":
            kl = F.kl_div(F.log_softmax(s, -1), F.log_softmax(t, -1), log_target=True, reduction="none").sum(-1)
            kl_sum += float((kl * weights).sum())
        count += float(weights.sum())
    metrics = {"cosine": cos_sum / count}
    if projection != "none":
        metrics["kl"] = kl_sum / count
    return metrics
