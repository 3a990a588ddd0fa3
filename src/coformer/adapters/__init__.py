"""Family adapters: Hugging Face models in, our canonical ``SubModel`` + ``OutputHead`` out."""

from __future__ import annotations

from torch import nn

from coformer.adapters.base import Adapter, Canonical
from coformer.adapters.bert import BertAdapter
from coformer.adapters.gpt2 import GPT2Adapter
from coformer.adapters.vit import ViTAdapter
from coformer.errors import ModelError

ADAPTERS: tuple[type[Adapter], ...] = (GPT2Adapter, BertAdapter, ViTAdapter)


def adapter_for(model: nn.Module, pooling: str | None = None, normalize: bool = False) -> Adapter:
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    for cls in ADAPTERS:
        if model_type in cls.model_types:
            return cls(model, pooling, normalize)
    supported = ", ".join(t for cls in ADAPTERS for t in cls.model_types)
    raise ModelError(f"model_type {model_type!r} has no adapter (supported: {supported}); see coformer/adapters/base.py")


def canonicalize(model: nn.Module, pooling: str | None = None, normalize: bool = False) -> Canonical:
    return adapter_for(model, pooling, normalize).canonical()


__all__ = ["ADAPTERS", "Adapter", "Canonical", "adapter_for", "canonicalize"]
