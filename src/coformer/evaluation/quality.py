"""Quality of a method against the teacher, with the metric of the model's kind: output cosine for
every model (KL for LMs and classifiers), next-token perplexity for LMs, top-1 agreement with the
teacher for classifiers (and accuracy where the data has labels), and recall@1/@5 on the embedded
retrieval pairs. Computed with the in-process executor (the runtime reproduces it to 1e-5; its own
outputs are compared on the timed requests).

Notation: B batch, T tokens, V vocabulary, C classes. The kind is the head's ``projection``
("lm", "classifier" or "none"), never the family name.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from coformer.evaluation.fidelity import output_fidelity
from coformer.evaluation.retrieval import retrieval_recall
from coformer.executor import Teacher

BY_DEFINITION = ("cosine", "agreement", "kl")  # keys that are 1 (KL: 0) for the teacher itself, not worth reporting beside it
# What a model's output is for, and the metrics that say how well a student serves it, the first
# one measured is what a quality-against-latency front plots. Lower is better for perplexity and KL.
TASK_METRICS = {
    "embedding": ("cosine", "recall@1", "recall@5"),  # pooled, unprojected: a sentence embedding
    "lm": ("kl", "perplexity", "cosine"),
    "classifier": ("accuracy", "agreement", "kl", "cosine"),  # accuracy: on labelled data only (data.label_field)
    "states": ("cosine",),  # every position's hidden state (a bare encoder or decoder)
}
LOWER_IS_BETTER = ("perplexity", "kl")


def task_of(head) -> str:
    """The task of a head (``HeadConfig``): its projection decides, never the family name."""
    if head.projection in ("lm", "classifier"):
        return head.projection
    return "states" if head.pooling == "none" else "embedding"


def quality_batch_size(head) -> int:
    """Held-out inputs per scoring batch: an LM's logits over a 50k vocabulary take 25 MB per
    128-token text, so LMs score 8 at a time, everything else 64."""
    return 8 if head.projection == "lm" else 64


def quality(teacher, model, tokenizer, batches, pairs, max_length: int) -> dict[str, float]:
    """``model`` is a student ensemble, or the teacher itself (fidelity 1 by definition).
    ``pairs`` are scored for recall only when the model embeds sentences."""
    model.eval()
    head = head_config(model)
    projection = head.projection
    if model is teacher:
        metrics = {"cosine": 1.0} | ({"kl": 0.0} if projection != "none" else {})
    else:
        metrics = output_fidelity(teacher, model, batches)
    if projection == "lm":
        metrics["perplexity"] = perplexity(model, batches)
    if projection == "classifier":
        metrics["agreement"] = 1.0 if model is teacher else top1_agreement(teacher, model, batches)
        if batches and all("labels" in b for b in batches):
            metrics["accuracy"] = accuracy(model, batches)
    if pairs and task_of(head) == "embedding":
        recall = retrieval_recall(lambda b: model(b).output, tokenizer, pairs, (1, 5), max_length)
        metrics |= {f"recall@{k}": v for k, v in recall.items()}
    return metrics


def head_config(model):
    """The head that decides the metrics: the teacher's own, or the one the student's aggregator applies."""
    return model.head.config if isinstance(model, Teacher) else model.aggregator.config.head


@torch.no_grad()
def perplexity(model, batches) -> float:
    """exp of the mean next-token negative log-likelihood over real (unpadded) tokens: an LM's own
    task metric, comparable between teacher and student without labels beyond the text itself."""
    nll, count = 0.0, 0.0
    for batch in batches:
        logits = model(batch).output[:, :-1].float()  # (B, T-1, V) predictions of tokens 1..T-1
        targets = batch["input_ids"][:, 1:]  # (B, T-1)
        mask = batch.get("attention_mask", torch.ones_like(batch["input_ids"]))[:, 1:].float()  # (B, T-1)
        losses = F.cross_entropy(logits.transpose(1, 2), targets, reduction="none")  # (B, T-1)
        nll += float((losses * mask).sum())
        count += float(mask.sum())
    return math.exp(nll / count) if count else float("nan")


@torch.no_grad()
def top1_agreement(teacher, model, batches) -> float:
    """Share of inputs whose predicted class equals the teacher's: a classifier's accuracy with the
    teacher's predictions as labels (held-out data here has no labels of its own)."""
    agree, count = 0, 0
    for batch in batches:
        want = teacher(batch).output.argmax(-1)  # (B,)
        got = model(batch).output.argmax(-1)  # (B,)
        agree += int((got == want).sum())
        count += want.numel()
    return agree / count if count else float("nan")


@torch.no_grad()
def accuracy(model, batches) -> float:
    """Share of labelled inputs whose predicted class is the label: the task metric, for the teacher
    and every student alike."""
    right, count = 0, 0
    for batch in batches:
        right += int((model(batch).output.argmax(-1) == batch["labels"]).sum())  # (B,) against (B,)
        count += batch["labels"].numel()
    return right / count if count else float("nan")


def output_cosine(got: torch.Tensor, want: torch.Tensor) -> float:
    """Mean cosine of two outputs (B, [T,] .) along the last axis."""
    return float(F.cosine_similarity(got.float(), want.float(), dim=-1).mean())
