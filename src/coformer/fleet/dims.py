"""Family-neutral model dimensions and the request shape: what the cost model needs, no weights.

Notation: L blocks, H heads per block of size hd, F FFN neurons per block, d hidden width,
V vocabulary, P positions, w a device's residual width, h / f its heads / neurons in a block.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from coformer.errors import CoFormerError

EMBEDDINGS = ("gpt2", "bert", "vit")
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
    """The shapes of a transformer, whatever its family (GPT-2, BERT, ViT)."""

    num_layers: int  # L
    num_heads: int  # H
    head_dim: int  # hd
    ffn_size: int  # F
    hidden_size: int  # d
    vocab_size: int = 0  # V (token embeddings; 0 for ViT)
    max_positions: int = 0  # P learned positions (token models)
    type_vocab_size: int = 0  # BERT token types
    embedding: str = "gpt2"  # gpt2 | bert (adds token types + LayerNorm) | vit (patches + CLS)
    causal: bool = False  # decoder with a KV cache
    image_size: int = 0  # ViT
    patch_size: int = 0  # ViT
    num_channels: int = 0  # ViT input channels
    final_norm: bool = True  # the aggregator's LayerNorm before the head (GPT-2 ln_f, ViT)
    pooler: bool = False  # BERT-style tanh(dense(CLS)) before the head
    head_outputs: int = 0  # rows of the output projection: V for an LM head, C for a classifier, 0 none
    head_bias: bool = False  # the output projection has a bias
    tied_head: bool = False  # the LM projection is the token embedding (counted once in the original)
    bytes_per_param: int = 4  # 4 fp32, 2 fp16/bf16; activations and KV cache use the same precision

    def __post_init__(self) -> None:
        if self.embedding not in EMBEDDINGS:
            raise CoFormerError(f"ModelDims.embedding={self.embedding!r} must be one of {EMBEDDINGS}")
        if min(self.num_layers, self.num_heads, self.head_dim, self.ffn_size, self.hidden_size) < 1:
            raise CoFormerError(f"ModelDims needs positive num_layers/num_heads/head_dim/ffn_size/hidden_size, got {self}")

    # --- constructors -------------------------------------------------------------------------
    @classmethod
    def from_canonical(cls, canonical) -> ModelDims:
        """From a canonical model (``coformer.adapters.Canonical``): its body and head configs."""
        c, head = canonical.body.config, canonical.head.config
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
            image_size=c.image_size,
            patch_size=c.patch_size,
            num_channels=c.num_channels,
            final_norm=head.final_norm,
            pooler=head.pooling == "pooler",
            head_outputs=head.num_outputs if head.projection != "none" else 0,
            head_bias=head.projection_bias and head.projection != "none",
            tied_head=head.projection == "lm" and c.embedding == "gpt2",
            bytes_per_param=canonical.body.discount.element_size(),
        )

    @classmethod
    def from_hf_config(cls, config, bytes_per_param: int = 4) -> ModelDims:
        """From a Hugging Face config alone (no weights), e.g. ``GPT2Config`` of GPT2-XL.

        The head follows ``config.architectures`` when set (``*LMHeadModel``, ``*ForSequence/
        ImageClassification``); without it: GPT-2 gets its tied LM head, BERT its pooler, ViT none.
        """
        arch = (getattr(config, "architectures", None) or [""])[0]
        kind = config.model_type
        if kind == "gpt2":
            lm = arch.endswith("LMHeadModel") or not arch
            return cls(
                num_layers=config.n_layer,
                num_heads=config.n_head,
                head_dim=config.n_embd // config.n_head,
                ffn_size=config.n_inner or 4 * config.n_embd,
                hidden_size=config.n_embd,
                vocab_size=config.vocab_size,
                max_positions=config.n_positions,
                embedding="gpt2",
                causal=True,
                head_outputs=config.vocab_size if lm else 0,
                tied_head=lm and getattr(config, "tie_word_embeddings", True),
                bytes_per_param=bytes_per_param,
            )
        classifier = arch.endswith("ForSequenceClassification") or arch.endswith("ForImageClassification")
        common = dict(
            num_layers=config.num_hidden_layers,
            num_heads=config.num_attention_heads,
            head_dim=config.hidden_size // config.num_attention_heads,
            ffn_size=config.intermediate_size,
            hidden_size=config.hidden_size,
            head_outputs=config.num_labels if classifier else 0,
            head_bias=classifier,
            bytes_per_param=bytes_per_param,
        )
        if kind == "bert":
            return cls(
                **common,
                vocab_size=config.vocab_size,
                max_positions=config.max_position_embeddings,
                type_vocab_size=config.type_vocab_size,
                embedding="bert",
                final_norm=False,
                pooler=True,
            )
        if kind == "vit":
            return cls(
                **common,
                embedding="vit",
                image_size=config.image_size,
                patch_size=config.patch_size,
                num_channels=config.num_channels,
            )
        raise CoFormerError(f"no ModelDims for model_type {kind!r}; supported: gpt2, bert, vit")

    @classmethod
    def named(cls, spec: str, bytes_per_param: int = 4) -> ModelDims:
        """Shapes by name without weights: a GPT-2 size (``gpt2-xl``), or any config the loader resolves."""
        if spec in GPT2_SIZES:
            from transformers import GPT2Config

            width, layers, heads = GPT2_SIZES[spec]
            return cls.from_hf_config(GPT2Config(n_embd=width, n_layer=layers, n_head=heads), bytes_per_param)
        from transformers import AutoConfig

        from coformer.loading import resolve

        try:
            config = AutoConfig.from_pretrained(resolve(spec))
        except OSError as e:
            raise CoFormerError(f"no model config for {spec!r} ({e}); give {', '.join(GPT2_SIZES)}, a local folder or a cached hub id") from None
        return cls.from_hf_config(config, bytes_per_param)

    def with_precision(self, bytes_per_param: int) -> ModelDims:
        return replace(self, bytes_per_param=bytes_per_param)

    # --- shapes ---------------------------------------------------------------------------------
    @property
    def pre_norm(self) -> bool:
        """GPT-2 and ViT normalise before each sub-layer; BERT after (post-LN)."""
        return self.embedding != "bert"

    @property
    def patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2 if self.embedding == "vit" else 0

    def tokens(self, workload: Workload) -> int:
        """T: prompt tokens per sequence (ViT: patches + CLS)."""
        return self.patches + 1 if self.embedding == "vit" else workload.seq_len

    # --- parameters (counts, not bytes) -------------------------------------------------------
    def embedding_params(self, width):
        """Parameters of the embedding at residual width w (scalar or array)."""
        w = np.asarray(width)
        if self.embedding == "vit":
            return w * (self.num_channels * self.patch_size**2 + 1) + w + (self.patches + 1) * w
        rows = self.vocab_size + self.max_positions + (self.type_vocab_size if self.embedding == "bert" else 0)
        return rows * w + (2 * w if self.embedding == "bert" else 0)

    def block_params(self, width, heads, neurons):
        """Parameters of one block with h heads and f neurons at width w (broadcasting arrays)."""
        w, h, f = np.asarray(width), np.asarray(heads), np.asarray(neurons)
        inner = h * self.head_dim
        attention = 4 * w * inner + 3 * inner + w  # q, k, v (+bias), o weight, o bias
        ffn = 2 * w * f + f + w  # fc1 (+bias), fc2 weight, fc2 bias
        return attention + ffn + 4 * w  # two LayerNorms

    def head_params(self) -> int:
        """Final norm, pooler and output projection (the tied LM projection counts as its own copy)."""
        d = self.hidden_size
        return (2 * d if self.final_norm else 0) + (d * d + d if self.pooler else 0) + self.head_outputs * d + (
            self.head_outputs if self.head_bias else 0
        )

    def parameter_count(self) -> int:
        """Parameters of the original model, a tied LM projection counted once (as ``model.parameters()``)."""
        d, L = self.hidden_size, self.num_layers
        body = int(self.embedding_params(d)) + L * int(self.block_params(d, self.num_heads, self.ffn_size))
        head = self.head_params() - (self.head_outputs * d if self.tied_head else 0)
        return body + head
