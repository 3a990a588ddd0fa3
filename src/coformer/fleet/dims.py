"""Family-neutral model dimensions and the request shape: what the cost model needs, no weights.

Notation: L blocks, H heads per block of size hd, F FFN neurons per block, d hidden width,
V vocabulary, P positions, w a device's residual width, h / f its heads / neurons in a block.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import cached_property
from typing import get_args

import numpy as np

from coformer.errors import CoFormerError
from coformer.modeling.heads import HeadConfig
from coformer.modeling.submodel import EmbeddingKind, Embeddings, SubModelConfig

GPT2_SIZES = {"gpt2": (768, 12, 12), "gpt2-medium": (1024, 24, 16), "gpt2-large": (1280, 36, 20), "gpt2-xl": (1600, 48, 25)}


@dataclass(frozen=True)
class Workload:
    """One request: a prefill of batch x seq_len tokens, then decode_tokens generated one by one."""

    batch: int = 1  # B sequences (or images) per request
    seq_len: int = 128  # T prompt tokens (ignored for ViT, whose tokens are its patches + CLS)
    decode_tokens: int = 0  # G tokens generated after the prompt with a KV cache (causal models)

    def __post_init__(self) -> None:
        if self.batch < 1 or self.seq_len < 1 or self.decode_tokens < 0:
            raise CoFormerError(
                f"workload batch={self.batch}, seq_len={self.seq_len}, decode_tokens={self.decode_tokens}: "
                "batch and seq_len must be >= 1 and decode_tokens >= 0"
            )


@dataclass(frozen=True)
class ModelDims:
    """The shapes of a transformer, whatever its family: built from the canonical configs the
    adapters produce (``from_canonical``, ``from_hf_config``), never from family config names."""

    num_layers: int  # L
    num_heads: int  # H
    head_dim: int  # hd
    ffn_size: int  # F
    hidden_size: int  # d
    vocab_size: int = 0  # V (token embeddings; 0 for images)
    max_positions: int = 0  # P learned positions (token models)
    type_vocab_size: int = 0  # token types (BERT-style embedding)
    embedding: str = "gpt2"  # the canonical embedding kind (``SubModelConfig.embedding``)
    causal: bool = False  # decoder with a KV cache
    pre_norm: bool = True  # LayerNorm before each sub-layer (GPT-2, ViT); False: after (BERT)
    qkv_bias: bool = True  # q, k, v projections have biases
    image_size: int = 0  # image models
    patch_size: int = 0  # image models
    num_channels: int = 0  # image models' input channels
    class_tokens: int = 1  # image models: learned tokens ahead of the patches (CLS, DeiT's distillation token)
    final_norm: bool = True  # the aggregator's LayerNorm before the head (GPT-2 ln_f, ViT)
    pooler: bool = False  # BERT-style tanh(dense(CLS)) before the head
    readout_tokens: int = 0  # positions of the last state the head reads (``Readout``: 1 mean or CLS, 2 DeiT); 0 all
    head_outputs: int = 0  # rows of the output projection: V for an LM head, C for a classifier, 0 none
    head_bias: bool = False  # the output projection has a bias
    head_projections: int = 1  # output projections (DeiT with teacher: 2, averaged)
    tied_head: bool = False  # the LM projection is the token embedding (counted once in the original)
    bytes_per_param: int = 4  # 4 fp32, 2 fp16/bf16; activations and KV cache use the same precision

    def __post_init__(self) -> None:
        if self.embedding not in get_args(EmbeddingKind):
            raise CoFormerError(f"ModelDims.embedding={self.embedding!r} must be one of {get_args(EmbeddingKind)}")
        if min(self.num_layers, self.num_heads, self.head_dim, self.ffn_size, self.hidden_size) < 1:
            raise CoFormerError(f"ModelDims needs positive num_layers/num_heads/head_dim/ffn_size/hidden_size, got {self}")

    # --- constructors -------------------------------------------------------------------------
    @classmethod
    def from_configs(cls, c: SubModelConfig, head: HeadConfig, bytes_per_param: int = 4) -> ModelDims:
        """From the canonical body and head configs (what an adapter makes of any family)."""
        projecting = head.projection != "none"
        return cls(
            num_layers=c.num_layers,
            num_heads=max(c.heads_per_block),
            head_dim=c.head_dim,
            ffn_size=max(c.neurons_per_block),
            hidden_size=c.width,
            vocab_size=c.vocab_size,
            max_positions=c.max_positions,
            type_vocab_size=c.type_vocab_size,
            embedding=c.embedding,
            causal=c.causal,
            pre_norm=c.norm_position == "pre",
            qkv_bias=c.qkv_bias,
            image_size=c.image_size,
            patch_size=c.patch_size,
            num_channels=c.num_channels,
            class_tokens=c.class_tokens,
            final_norm=head.final_norm,
            pooler=head.pooling == "pooler",
            readout_tokens=1 if head.readout.kind == "mean" else head.readout.count,
            head_outputs=head.num_outputs if projecting else 0,
            head_bias=head.projection_bias and projecting,
            head_projections=2 if head.distillation else 1,
            tied_head=head.tied,
            bytes_per_param=bytes_per_param,
        )

    @classmethod
    def from_canonical(cls, canonical) -> ModelDims:
        """From a canonical model (``coformer.adapters.Canonical``): its body and head configs."""
        return cls.from_configs(canonical.body.config, canonical.head.config, canonical.body.discount.element_size())

    @classmethod
    def from_hf_config(cls, config, bytes_per_param: int = 4) -> ModelDims:
        """From a Hugging Face config alone (no weights), e.g. ``GPT2Config`` of GPT2-XL.

        The adapter reads the model built on the meta device: the head ``config.architectures``
        names when we reproduce it, the base model otherwise (``coformer.adapters.model_class``).
        """
        from coformer.adapters import shapes

        return cls.from_configs(*shapes(config), bytes_per_param)

    @classmethod
    def named(cls, spec: str, bytes_per_param: int = 4) -> ModelDims:
        """Shapes by name without weights: a GPT-2 size (``gpt2-xl``, with its LM head), or any config the loader resolves."""
        if spec in GPT2_SIZES:
            from transformers import GPT2Config

            width, layers, heads = GPT2_SIZES[spec]
            config = GPT2Config(n_embd=width, n_layer=layers, n_head=heads, architectures=["GPT2LMHeadModel"])
            return cls.from_hf_config(config, bytes_per_param)
        from coformer.loading import load_config

        return cls.from_hf_config(load_config(spec, also=f"{', '.join(GPT2_SIZES)}, "), bytes_per_param)

    def with_precision(self, bytes_per_param: int) -> ModelDims:
        return replace(self, bytes_per_param=bytes_per_param)

    # --- shapes ---------------------------------------------------------------------------------
    @cached_property
    def embedding_config(self) -> SubModelConfig:
        """The canonical config of this model's embedding at width 1: what it reads and holds."""
        return SubModelConfig(
            family="dims", embedding=self.embedding, norm_position="pre" if self.pre_norm else "post",
            activation="gelu", causal=self.causal, layer_norm_eps=1e-5, hidden_size=1, channels=[0], head_dim=1,
            heads_per_block=[], neurons_per_block=[], vocab_size=self.vocab_size, max_positions=self.max_positions,
            type_vocab_size=self.type_vocab_size, image_size=self.image_size, patch_size=self.patch_size,
            num_channels=self.num_channels, class_tokens=self.class_tokens,
        )  # fmt: skip

    @property
    def input_kind(self) -> str:
        return self.embedding_config.input_kind

    def tokens(self, workload: Workload) -> int:
        """T: prompt tokens per sequence (image models: patches + class tokens)."""
        return self.embedding_config.tokens(workload.seq_len)

    def input_values(self, new_tokens: int) -> int:
        """Values one item of a request carries to a device: token ids, or pixels."""
        c = self.embedding_config
        return c.num_channels * c.image_size**2 if c.input_kind == "pixels" else new_tokens

    # --- parameters (counts, not bytes) -------------------------------------------------------
    @cached_property
    def embedding_params_per_channel(self) -> int:
        return Embeddings.parameters_per_channel(self.embedding_config)

    def embedding_params(self, width):
        """Parameters of the embedding at residual width w (scalar or array)."""
        return np.asarray(width) * self.embedding_params_per_channel

    def block_params(self, width, heads, neurons):
        """Parameters of one block with h heads and f neurons at width w (broadcasting arrays)."""
        w, h, f = np.asarray(width), np.asarray(heads), np.asarray(neurons)
        inner = h * self.head_dim
        attention = 4 * w * inner + 3 * inner * self.qkv_bias + w  # q, k, v (+bias), o weight, o bias
        ffn = 2 * w * f + f + w  # fc1 (+bias), fc2 weight, fc2 bias
        return attention + ffn + 4 * w  # two LayerNorms

    def head_params(self) -> int:
        """Final norm, pooler and output projection (the tied LM projection counts as its own copy)."""
        d = self.hidden_size
        projection = self.head_outputs * d + (self.head_outputs if self.head_bias else 0)
        return (2 * d if self.final_norm else 0) + (d * d + d if self.pooler else 0) + self.head_projections * projection

    def parameter_count(self) -> int:
        """Parameters of the original model, a tied LM projection counted once (as ``model.parameters()``)."""
        d, L = self.hidden_size, self.num_layers
        body = int(self.embedding_params(d)) + L * int(self.block_params(d, self.num_heads, self.ffn_size))
        head = self.head_params() - (self.head_outputs * d if self.tied_head else 0)
        return body + head
