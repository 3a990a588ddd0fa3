"""The profile stage's measurement, run where a node stands (its ``/profile`` route)."""

from __future__ import annotations

from coformer.decompose import ModelShape
from coformer.fleet import ModelDims, Workload
from coformer.fleet.measure import profile_machine
from coformer.modeling import SubModelConfig


def dims_of(config: SubModelConfig, shape: ModelShape) -> ModelDims:
    """The original model's shapes (those the cost model prices) from a sub-model config and the policy."""
    return ModelDims(
        num_layers=shape.num_layers, num_heads=shape.num_heads, head_dim=config.head_dim, ffn_size=shape.ffn_size,
        hidden_size=shape.hidden_size, vocab_size=config.vocab_size, max_positions=config.max_positions,
        type_vocab_size=config.type_vocab_size, embedding=config.embedding, causal=config.causal,
        image_size=config.image_size, patch_size=config.patch_size, num_channels=config.num_channels,
        pre_norm=config.norm_position == "pre", qkv_bias=config.qkv_bias, class_tokens=config.class_tokens,
    )


def profile_here(config: SubModelConfig, shape: ModelShape, batch: int, seq_len: int, repeats: int, core: int | None) -> dict:
    """This machine as one device profile (one pinned core, one thread), as the profile stage measures it."""
    per_core, _ = profile_machine(dims_of(config, shape), Workload(batch=batch, seq_len=seq_len), core=core, whole=False, repeats=repeats)
    return per_core.profile.model_dump() | {"seconds": per_core.seconds}
