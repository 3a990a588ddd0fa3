"""Calibration losses: hidden-state alignment, output distillation, optional task loss.

Notation: B batch, T tokens, d hidden width, V vocabulary / C classes.

All token-level losses average over real tokens only (the attention mask hides padding). MSE is
divided by the teacher's mean square, so one learning rate suits models whose stream scales
differ (BERT's post-LN states are O(1), GPT-2's pre-LN stream grows with depth).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from coformer.errors import CoFormerError
from coformer.modeling import HeadConfig


def token_weights(mask: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor:
    """(B, T) weights summing to 1 over real tokens (uniform when there is no mask)."""
    w = torch.ones(like.shape[:2], device=like.device) if mask is None else mask.to(like.dtype)  # (B, T)
    return w / w.sum().clamp(min=1)


def relative_mse(student: torch.Tensor, teacher: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Mean squared error over the last dim divided by the teacher's mean square; ``weights`` (B, T) or None."""
    err = (student - teacher).pow(2).mean(-1)  # (B, [T])
    scale = teacher.pow(2).mean(-1)
    if weights is None:
        return err.mean() / scale.mean().clamp(min=1e-12)
    return (err * weights).sum() / (scale * weights).sum().clamp(min=1e-12)


def cosine_distance(student: torch.Tensor, teacher: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """1 - cosine over the last dim, averaged (weighted by ``weights`` (B, T) when given)."""
    dist = 1 - F.cosine_similarity(student, teacher, dim=-1)  # (B, [T])
    return dist.mean() if weights is None else (dist * weights).sum()


def hidden_alignment(student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor | None, kind: str) -> torch.Tensor:
    """Merged student state vs teacher state, both (B, T, d)."""
    weights = token_weights(mask, student)
    if kind == "mse":
        return relative_mse(student, teacher, weights)
    if kind == "cosine":
        return cosine_distance(student, teacher, weights)
    raise CoFormerError(f"unknown hidden loss {kind!r}; use 'mse' or 'cosine'")


def logit_kl(student: torch.Tensor, teacher: torch.Tensor, temperature: float, weights: torch.Tensor | None) -> torch.Tensor:
    """KL(teacher || student) of temperature-softened logits (B, [T,] V), times T^2 (Hinton et al.)."""
    t = temperature
    kl = F.kl_div(F.log_softmax(student / t, -1), F.log_softmax(teacher / t, -1), log_target=True, reduction="none").sum(-1)
    kl = kl.mean() if weights is None else (kl * weights).sum()  # over sequences or real tokens
    return kl * t * t


def output_distillation(
    student: torch.Tensor, teacher: torch.Tensor, head: HeadConfig, mask: torch.Tensor | None, temperature: float
) -> torch.Tensor:
    """KL on logits for LMs and classifiers; cosine + MSE on embeddings and token states."""
    per_token = student.dim() == 3  # (B, T, .) LM logits or token states; else (B, .) per sequence
    weights = token_weights(mask, student) if per_token else None
    if head.projection != "none":
        return logit_kl(student, teacher, temperature, weights)
    return cosine_distance(student, teacher, weights) + relative_mse(student, teacher, weights)


def task_loss(output: torch.Tensor, labels: torch.Tensor, head: HeadConfig) -> torch.Tensor:
    """Cross-entropy on the data's labels: next tokens for LMs (-100 ignored), classes for classifiers."""
    if head.projection == "lm":
        return F.cross_entropy(output[:, :-1].flatten(0, 1), labels[:, 1:].flatten(), ignore_index=-100)  # (B*(T-1), V)
    if head.projection == "classifier":
        return F.cross_entropy(output, labels)  # (B, C)
    raise CoFormerError(
        "calibrate.task_weight > 0 needs a model with an LM or classifier head; an embedding model has no task "
        "loss here: set task_weight to 0"
    )
