"""GPT-2 (``GPT2Model``, ``GPT2LMHeadModel``): pre-LN, causal, ``Conv1D`` with fused q/k/v."""

from __future__ import annotations

from coformer.adapters.base import Adapter, Weights, layer_norm, prefixed
from coformer.modeling import HeadConfig, SubModelConfig


def conv1d(module) -> Weights:
    """``Conv1D`` keeps its weight as (in, out); we keep every projection as (out, in)."""
    return {"weight": module.weight.t(), "bias": module.bias}


class GPT2Adapter(Adapter):
    model_types = ("gpt2",)
    family = "gpt2"
    model_classes = ("GPT2Model", "GPT2LMHeadModel")
    honoured = (
        "n_embd", "n_layer", "n_head", "n_inner", "n_positions", "vocab_size", "activation_function",
        "layer_norm_epsilon", "scale_attn_weights", "scale_attn_by_inverse_layer_idx", "reorder_and_upcast_attn",
        "tie_word_embeddings",  # the head takes lm_head's own weight, tied or not
    )  # fmt: skip
    refused = {"add_cross_attention": False}  # cross-attention layers over an encoder's states

    def __init__(self, model, pooling=None, normalize=False):
        super().__init__(model, pooling, normalize)
        self.base = getattr(model, "transformer", model)

    def body_config(self) -> SubModelConfig:
        c = self.hf_config
        return SubModelConfig(
            family=self.family,
            embedding="gpt2",
            norm_position="pre",
            activation=c.activation_function,
            causal=True,
            layer_norm_eps=c.layer_norm_epsilon,
            hidden_size=c.n_embd,
            channels=list(range(c.n_embd)),
            head_dim=c.n_embd // c.n_head,
            heads_per_block=[c.n_head] * c.n_layer,
            neurons_per_block=[c.n_inner or 4 * c.n_embd] * c.n_layer,
            vocab_size=c.vocab_size,
            max_positions=c.n_positions,
            scale_attention=c.scale_attn_weights,
            inverse_depth_scale=c.scale_attn_by_inverse_layer_idx,
            upcast_attention=c.reorder_and_upcast_attn,
        )

    def embedding_weights(self) -> Weights:
        return {"word.weight": self.base.wte.weight, "position.weight": self.base.wpe.weight}

    def block_weights(self, i: int) -> Weights:
        block = self.base.h[i]
        qkv = conv1d(block.attn.c_attn)  # (3d, d): q, k, v stacked along out
        q, k, v = qkv["weight"].chunk(3, dim=0)
        qb, kb, vb = qkv["bias"].chunk(3, dim=0)
        return (
            prefixed("norm1", layer_norm(block.ln_1))
            | {"attn.q.weight": q, "attn.q.bias": qb, "attn.k.weight": k, "attn.k.bias": kb}
            | {"attn.v.weight": v, "attn.v.bias": vb}
            | prefixed("attn.o", conv1d(block.attn.c_proj))
            | prefixed("norm2", layer_norm(block.ln_2))
            | prefixed("ffn.fc1", conv1d(block.mlp.c_fc))
            | prefixed("ffn.fc2", conv1d(block.mlp.c_proj))
        )

    def head(self) -> tuple[HeadConfig, Weights]:
        c = self.hf_config
        lm = getattr(self.model, "lm_head", None)
        config = HeadConfig(
            hidden_size=c.n_embd,
            final_norm=True,
            layer_norm_eps=c.layer_norm_epsilon,
            projection="lm" if lm is not None else "none",
            num_outputs=c.vocab_size if lm is not None else 0,
            tied=lm is not None and lm.weight is self.base.wte.weight,
        )
        weights = prefixed("norm", layer_norm(self.base.ln_f))
        if lm is not None:
            weights["projection.weight"] = lm.weight  # tied to wte unless the checkpoint says otherwise
        return config, weights
