"""How far a student's output is from the teacher's: the ``D`` of the search objective.

Per item (a sequence, or a token where the output has one row per token):

* logits (LM and classifier heads): ``KL(teacher || student)`` of the softmax distributions;
* anything else (sentence embeddings, pooled or token states): ``1 - cosine``.

Padded tokens are left out. Items are returned separately so that several batches can be
averaged over items, whatever their sizes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from coformer.modeling import HeadConfig


def uses_logits(head: HeadConfig) -> bool:
    return head.projection != "none"


def per_item(student: torch.Tensor, teacher: torch.Tensor, head: HeadConfig, attention_mask=None) -> torch.Tensor:
    """Degradation of every item: (n,) for n sequences, or n unpadded tokens for per-token outputs."""
    if uses_logits(head):
        log_t = F.log_softmax(teacher.float(), dim=-1)  # (B, [T,] V)
        log_s = F.log_softmax(student.float(), dim=-1)
        values = (log_t.exp() * (log_t - log_s)).sum(-1)  # (B, [T])
    else:
        values = 1.0 - F.cosine_similarity(student.float(), teacher.float(), dim=-1)  # (B, [T])
    values = values.clamp(min=0)  # both are >= 0 in exact arithmetic; rounding can dip below
    if values.dim() == 2 and attention_mask is not None:
        return values[attention_mask.bool()]  # (n,)
    return values.flatten()


def measure(students: list[torch.Tensor], teachers: list[torch.Tensor], head: HeadConfig, masks: list) -> float:
    """Mean degradation over all items of all batches."""
    items = [per_item(s, t, head, m) for s, t, m in zip(students, teachers, masks)]
    return float(torch.cat(items).mean())
