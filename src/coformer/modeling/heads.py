"""The part of the model that runs once, on the aggregated state: final norm, pooling, head.

Notation: B batch, T tokens, d the original hidden width, V vocabulary, C classes.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel
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
            mask = torch.ones(hidden.shape[:2]) if attention_mask is None else attention_mask
            mask = mask.unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
            out = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)  # (B, d)
        else:
            out = hidden  # (B, T, d)
        if c.normalize:
            out = F.normalize(out, dim=-1)
        if self.distillation is not None:
            return (self.projection(out) + self.distillation(hidden[:, 1])) / 2  # (B, C)
        return out if self.projection is None else self.projection(out)  # (B, [T,] V|C)
