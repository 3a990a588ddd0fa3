"""The one interface every model family is mapped onto.

Adding a family means writing one subclass of ``Adapter`` in its own module and listing it in
``coformer.adapters.ADAPTERS``:

1. ``model_types``: the Hugging Face ``config.model_type`` values it handles;
2. ``body_config``: the family's shapes as a ``SubModelConfig`` (embedding kind, pre/post norm,
   activation, causal or not);
3. ``embedding_weights`` and ``block_weights(i)``: tensors under our canonical names, every
   projection in ``nn.Linear`` layout (out, in) — GPT-2's ``Conv1D`` stores (in, out) and must be
   transposed, fused q/k/v split;
4. ``head``: the final norm, pooling and projection that produce the model's output.

Nothing downstream (slicing, policies, execution, serving) ever branches on the family.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from coformer.modeling import HeadConfig, OutputHead, SubModel, SubModelConfig

Weights = dict[str, torch.Tensor]


@dataclass
class Canonical:
    """The original model rewritten into our modules: a full-width body and its output head."""

    body: SubModel
    head: OutputHead

    @property
    def config(self) -> SubModelConfig:
        return self.body.config


def linear(module: nn.Linear) -> Weights:
    return {"weight": module.weight, "bias": module.bias}


def layer_norm(module: nn.LayerNorm) -> Weights:
    return {"weight": module.weight, "bias": module.bias}


def prefixed(prefix: str, weights: Weights) -> Weights:
    return {f"{prefix}.{k}": v for k, v in weights.items() if v is not None}


def encoder_config(family: str, config, **shape) -> SubModelConfig:
    """``SubModelConfig`` from the BERT-style config names that BERT and ViT share."""
    return SubModelConfig(
        family=family,
        activation=config.hidden_act,
        layer_norm_eps=config.layer_norm_eps,
        hidden_size=config.hidden_size,
        channels=list(range(config.hidden_size)),
        head_dim=config.hidden_size // config.num_attention_heads,
        heads_per_block=[config.num_attention_heads] * config.num_hidden_layers,
        neurons_per_block=[config.intermediate_size] * config.num_hidden_layers,
        **shape,
    )


def pooled_head(
    config, base: nn.Module, model: nn.Module, pooling: str, normalize: bool, final_norm: nn.LayerNorm | None
) -> tuple[HeadConfig, Weights]:
    """Final norm, pooling (incl. a BERT-style ``pooler.dense``) and an optional ``classifier``."""
    classifier = getattr(model, "classifier", None)
    head = HeadConfig(
        hidden_size=config.hidden_size,
        final_norm=final_norm is not None,
        layer_norm_eps=config.layer_norm_eps,
        pooling=pooling,
        normalize=normalize,
        projection="classifier" if classifier is not None else "none",
        num_outputs=classifier.out_features if classifier is not None else 0,
        projection_bias=True,
    )
    weights = prefixed("norm", layer_norm(final_norm)) if final_norm is not None else {}
    if pooling == "pooler":
        weights |= prefixed("pooler", linear(base.pooler.dense))
    if classifier is not None:
        weights |= prefixed("projection", linear(classifier))
    return head, weights


class Adapter(ABC):
    model_types: ClassVar[tuple[str, ...]]
    family: ClassVar[str]

    def __init__(self, model: nn.Module, pooling: str | None = None, normalize: bool = False):
        self.model = model
        self.hf_config = model.config
        self.pooling = pooling  # override of the family's default pooling (e.g. "mean" for sentence embeddings)
        self.normalize = normalize

    @abstractmethod
    def body_config(self) -> SubModelConfig: ...

    @abstractmethod
    def embedding_weights(self) -> Weights: ...

    @abstractmethod
    def block_weights(self, i: int) -> Weights:
        """Keys: norm1/norm2.{weight,bias}, attn.{q,k,v,o}.{weight,bias}, ffn.fc1/fc2.{weight,bias}."""

    @abstractmethod
    def head(self) -> tuple[HeadConfig, Weights]:
        """Keys: norm.*, pooler.*, projection.* as ``OutputHead`` names them."""

    def canonical(self) -> Canonical:
        config = self.body_config()
        state = prefixed("embed", self.embedding_weights())
        for i in range(config.num_layers):
            state |= prefixed(f"blocks.{i}", self.block_weights(i))
        state["discount"] = torch.zeros(config.width)
        state = {k: v.detach().clone().float().contiguous() for k, v in state.items()}
        head_config, head_state = self.head()
        head = OutputHead(head_config)
        head.load_state_dict({k: v.detach().clone().float() for k, v in head_state.items()})
        return Canonical(SubModel.from_state_dict(config, state).eval(), head.eval())
