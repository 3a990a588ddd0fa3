"""Quality of a method against the teacher: output cosine (and KL for LMs and classifiers) on
held-out texts, and recall@1/@5 on the embedded retrieval pairs, computed with the in-process
executor (the runtime reproduces it to 1e-5; its own outputs are compared on the timed requests)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from coformer.evaluation.fidelity import output_fidelity
from coformer.evaluation.retrieval import retrieval_recall


def quality(teacher, model, tokenizer, batches, pairs, max_length: int) -> dict[str, float]:
    """``model`` is a student ensemble, or the teacher itself (fidelity 1 by definition)."""
    model.eval()
    metrics = {"cosine": 1.0} if model is teacher else output_fidelity(teacher, model, batches)
    if pairs:
        recall = retrieval_recall(lambda b: model(b).output, tokenizer, pairs, (1, 5), max_length)
        metrics |= {f"recall@{k}": v for k, v in recall.items()}
    return metrics


def output_cosine(got: torch.Tensor, want: torch.Tensor) -> float:
    """Mean cosine of two outputs (B, [T,] .) along the last axis."""
    return float(F.cosine_similarity(got.float(), want.float(), dim=-1).mean())
