"""The one interface every model family is mapped onto.

Adding a family (or a member of one) means writing one subclass of ``Adapter`` and listing it in
``coformer.adapters.ADAPTERS``:

1. ``model_types``: the Hugging Face ``config.model_type`` values it handles, and
   ``model_classes``: the transformers classes whose head it reproduces (any other head is
   refused, never dropped);
2. ``honoured`` and ``refused``: every config attribute of the family that changes what the model
   computes, either carried into the canonical model or accepted at the one value we implement
   (any other value is refused by name: a flag is never silently ignored);
3. ``body_config``: the family's shapes as a ``SubModelConfig`` (embedding kind, pre/post norm,
   activation, causal or not, attention scaling, position scheme);
4. ``embedding_weights`` and ``block_weights(i)``: tensors under our canonical names, every
   projection in ``nn.Linear`` layout (out, in) — GPT-2's ``Conv1D`` stores (in, out) and must be
   transposed, fused q/k/v split;
5. ``head``: the final norm, pooling and projection that produce the model's output.

Nothing downstream (slicing, policies, execution, cost model, data, serving) branches on the
family: it asks the canonical ``SubModelConfig`` and its ``Embeddings`` (input kind, tokens per
request, embedding parameters, vocabulary table) instead.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from coformer.errors import ModelError
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


def refusal(config, name: str, value: Any, implemented: str) -> ModelError:
    """The error for a config attribute set to a value no adapter computes."""
    return ModelError(
        f"{config.model_type} config {name}={value!r} is not implemented (coformer computes {implemented} only); "
        f"use a checkpoint without it, or implement {name} in coformer/adapters/"
    )


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
    config,
    pooling: str,
    normalize: bool,
    final_norm: nn.LayerNorm | None,
    pooler: nn.Linear | None = None,
    classifier: nn.Module | None = None,
    distillation: nn.Linear | None = None,
) -> tuple[HeadConfig, Weights]:
    """Final norm, pooling (``pooler``: tanh(dense(first token))) and an optional classifier.

    A classifier that is not an ``nn.Linear`` (transformers' ``nn.Identity`` when ``num_labels=0``)
    passes the pooled vector through. ``distillation``: DeiT's second classifier, on token 1.
    """
    classifier = classifier if isinstance(classifier, nn.Linear) else None
    head = HeadConfig(
        hidden_size=config.hidden_size,
        final_norm=final_norm is not None,
        layer_norm_eps=config.layer_norm_eps,
        pooling=pooling,
        normalize=normalize,
        projection="classifier" if classifier is not None else "none",
        num_outputs=classifier.out_features if classifier is not None else 0,
        projection_bias=True,
        distillation=classifier is not None and distillation is not None,
    )
    weights = prefixed("norm", layer_norm(final_norm)) if final_norm is not None else {}
    if pooling == "pooler":
        weights |= prefixed("pooler", linear(pooler))
    if classifier is not None:
        weights |= prefixed("projection", linear(classifier))
    if head.distillation:
        weights |= prefixed("distillation", linear(distillation))
    return head, weights


class Adapter(ABC):
    model_types: ClassVar[tuple[str, ...]]
    family: ClassVar[str]
    model_classes: ClassVar[tuple[str, ...]]  # transformers classes whose output ``head`` reproduces
    honoured: ClassVar[tuple[str, ...]]  # config attributes that change the computation, all carried into ours
    # attributes implemented at one value only -> that value (a callable derives it from the config)
    refused: ClassVar[dict[str, Any | Callable[[Any], Any]]] = {}

    def __init__(self, model: nn.Module, pooling: str | None = None, normalize: bool = False):
        self.model = model
        self.hf_config = model.config
        self.pooling = pooling  # override of the family's default pooling (e.g. "mean" for sentence embeddings)
        self.normalize = normalize
        name = type(model).__name__
        if name not in self.model_classes:
            raise ModelError(
                f"{name} has a head coformer does not reproduce; load the base model (AutoModel) or one of "
                f"{', '.join(self.model_classes)}"
            )
        for attribute, implemented in self.refused.items():
            implemented = implemented(self.hf_config) if callable(implemented) else implemented
            value = getattr(self.hf_config, attribute, implemented)
            if value != implemented:
                raise refusal(self.hf_config, attribute, value, f"{attribute}={implemented!r}")

    @abstractmethod
    def body_config(self) -> SubModelConfig: ...

    @abstractmethod
    def embedding_weights(self) -> Weights: ...

    @abstractmethod
    def block_weights(self, i: int) -> Weights:
        """Keys: norm1/norm2.{weight,bias}, attn.{q,k,v,o}.{weight,bias}, ffn.fc1/fc2.{weight,bias}."""

    @abstractmethod
    def head(self) -> tuple[HeadConfig, Weights]:
        """Keys: norm.*, pooler.*, projection.*, distillation.* as ``OutputHead`` names them."""

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
