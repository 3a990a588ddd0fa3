"""The part of the model that runs once, on the aggregated state: final norm, pooling, head.

Notation: B batch, T tokens, d the original hidden width, V vocabulary, C classes.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, Field
from torch import nn

Pooling = Literal["none", "cls", "pooler", "mean"]
Projection = Literal["none", "lm", "classifier"]


class HeadConfig(BaseModel):
    """Which output the original model produces from its last hidden state."""

    hidden_size: int  # d
    final_norm: bool  # GPT-2's ln_f, ViT's layernorm; BERT has none
    layer_norm_eps: float = 1e-5
    pooling: Pooling = "none"  # none: token states; cls: first token; pooler: tanh(dense(cls)); mean: masked mean
    normalize: bool = False  # L2-normalise the pooled vector (sentence-transformers' Normalize)
    projection: Projection = "none"  # lm: logits per token; classifier: logits per sequence
    num_outputs: int = 0  # V for "lm", C for "classifier"
    projection_bias: bool = False
    tied: bool = False  # the projection is the token table in the original (one copy there, its own copy here)
    distillation: bool = False  # DeiT with teacher: mean of the classifier on token 0 and a second one on token 1

    @property
    def readout(self) -> Readout:
        if self.pooling in ("cls", "pooler"):
            return Readout(kind="first", count=2 if self.distillation else 1)
        if self.pooling == "mean" and not self.final_norm and not self.distillation:
            return Readout(kind="mean")
        return Readout()


class Readout(BaseModel):
    """The part of the last merged state the head reads, so that devices send only that part.

    The last exports and the merge are affine per position, so picking positions and a masked
    mean over positions commute with them: a device that sends ``reduce(export)`` instead of its
    whole (B, T, w) export gives the same output, for a fraction of the bytes and of the merge.
    ``tokens``: every position; ``first``: the first ``count`` (CLS, DeiT's distillation token);
    ``last``: the last ``count`` (the next-token logits of generation); ``mean``: the masked mean
    (mean pooling with no final norm in between, which is not affine).
    """

    kind: Literal["tokens", "first", "last", "mean"] = "tokens"
    count: int = Field(default=0, ge=0)  # first / last: positions kept

    def reduce(self, state: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
        """(B, T, w) -> (B, T', w): T' = T, ``count`` or 1."""
        if self.kind == "first":
            return state[:, : self.count]
        if self.kind == "last":
            return state[:, -self.count :]
        if self.kind == "mean":
            return masked_mean(state, attention_mask).unsqueeze(1)
        return state

    def head_mask(self, attention_mask: torch.Tensor | None) -> torch.Tensor | None:
        """The mask that goes with the reduced state (a mean is one valid position)."""
        if attention_mask is None or self.kind == "tokens":
            return attention_mask
        if self.kind == "mean":
            return None
        return attention_mask[:, : self.count] if self.kind == "first" else attention_mask[:, -self.count :]


def masked_mean(hidden: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
    """(B, T, d) -> (B, d): the mean over the positions the mask keeps."""
    mask = torch.ones(hidden.shape[:2]) if attention_mask is None else attention_mask
    mask = mask.unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
    return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)


class OutputHead(nn.Module):
    def __init__(self, c: HeadConfig):
        super().__init__()
        self.config = c
        self.norm = nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps) if c.final_norm else None
        self.pooler = nn.Linear(c.hidden_size, c.hidden_size) if c.pooling == "pooler" else None
        self.projection = (
            nn.Linear(c.hidden_size, c.num_outputs, bias=c.projection_bias) if c.projection != "none" else None
        )
        self.distillation = nn.Linear(c.hidden_size, c.num_outputs, bias=c.projection_bias) if c.distillation else None

    def normed(self, hidden: torch.Tensor) -> torch.Tensor:
        return hidden if self.norm is None else self.norm(hidden)

    def forward(self, hidden: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Final norm already applied (see ``normed``); returns the model's output."""
        c = self.config
        if c.pooling == "cls":
            out = hidden[:, 0]  # (B, d)
        elif c.pooling == "pooler":
            out = torch.tanh(self.pooler(hidden[:, 0]))  # (B, d)
        elif c.pooling == "mean":
            out = masked_mean(hidden, attention_mask)  # (B, d)
        else:
            out = hidden  # (B, T, d)
        if c.normalize:
            out = F.normalize(out, dim=-1)
        if self.distillation is not None:
            return (self.projection(out) + self.distillation(hidden[:, 1])) / 2  # (B, C)
        return out if self.projection is None else self.projection(out)  # (B, [T,] V|C)
