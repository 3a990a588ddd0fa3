"""Family adapters: Hugging Face models in, our canonical ``SubModel`` + ``OutputHead`` out."""

from __future__ import annotations

import torch
from torch import nn

from coformer.adapters.base import Adapter, Canonical
from coformer.adapters.bert import BertAdapter, RobertaAdapter
from coformer.adapters.gpt2 import GPT2Adapter
from coformer.adapters.vit import DeiTAdapter, ViTAdapter
from coformer.errors import ModelError
from coformer.modeling import HeadConfig, SubModelConfig

ADAPTERS: tuple[type[Adapter], ...] = (GPT2Adapter, BertAdapter, RobertaAdapter, ViTAdapter, DeiTAdapter)
MODEL_TYPES = tuple(t for cls in ADAPTERS for t in cls.model_types)  # every config.model_type we decompose


def adapter_for(model: nn.Module, pooling: str | None = None, normalize: bool = False) -> Adapter:
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    for cls in ADAPTERS:
        if model_type in cls.model_types:
            return cls(model, pooling, normalize)
    raise ModelError(
        f"model_type {model_type!r} has no adapter (supported: {', '.join(MODEL_TYPES)}); see coformer/adapters/base.py"
    )


def canonicalize(model: nn.Module, pooling: str | None = None, normalize: bool = False) -> Canonical:
    return adapter_for(model, pooling, normalize).canonical()


def model_class(config):
    """The transformers class to load for ``config``: the one ``architectures`` names when an adapter
    reproduces its head, else the base model (``AutoModel``), never a head we would drop."""
    import transformers

    arch = (getattr(config, "architectures", None) or [""])[0]
    supported = {name for cls in ADAPTERS for name in cls.model_classes}
    return getattr(transformers, arch) if arch in supported else transformers.AutoModel


def shapes(config) -> tuple[SubModelConfig, HeadConfig]:
    """Body and head configs of the model ``config`` describes, without weights (built on the meta device)."""
    if getattr(config, "model_type", None) not in MODEL_TYPES:
        raise ModelError(f"model_type {config.model_type!r} has no adapter (supported: {', '.join(MODEL_TYPES)})")
    cls = model_class(config)
    with torch.device("meta"):
        model = cls.from_config(config) if hasattr(cls, "from_config") else cls(config)
    adapter = adapter_for(model)
    return adapter.body_config(), adapter.head()[0]


__all__ = ["ADAPTERS", "MODEL_TYPES", "Adapter", "Canonical", "adapter_for", "canonicalize", "model_class", "shapes"]
