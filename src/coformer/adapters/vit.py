"""ViT (``ViTModel``, ``ViTForImageClassification``): pre-LN, patch embedding, CLS token."""

from __future__ import annotations

from coformer.adapters.base import Adapter, Weights, encoder_config, layer_norm, linear, pooled_head, prefixed
from coformer.modeling import HeadConfig, SubModelConfig


class ViTAdapter(Adapter):
    model_types = ("vit",)
    family = "vit"

    def __init__(self, model, pooling=None, normalize=False):
        super().__init__(model, pooling, normalize)
        self.base = getattr(model, "vit", model)

    def body_config(self) -> SubModelConfig:
        c = self.hf_config
        return encoder_config(
            self.family,
            c,
            embedding="vit",
            norm_position="pre",
            causal=False,
            image_size=c.image_size,
            patch_size=c.patch_size,
            num_channels=c.num_channels,
        )

    def embedding_weights(self) -> Weights:
        e = self.base.embeddings
        return {"cls": e.cls_token, "position": e.position_embeddings} | prefixed(
            "patch", linear(e.patch_embeddings.projection)
        )

    def block_weights(self, i: int) -> Weights:
        layer = self.base.layers[i]  # transformers 5 layout
        att = layer.attention
        return (
            prefixed("norm1", layer_norm(layer.layernorm_before))
            | prefixed("attn.q", linear(att.q_proj))
            | prefixed("attn.k", linear(att.k_proj))
            | prefixed("attn.v", linear(att.v_proj))
            | prefixed("attn.o", linear(att.o_proj))
            | prefixed("norm2", layer_norm(layer.layernorm_after))
            | prefixed("ffn.fc1", linear(layer.mlp.fc1))
            | prefixed("ffn.fc2", linear(layer.mlp.fc2))
        )

    def head(self) -> tuple[HeadConfig, Weights]:
        has_pooler = getattr(self.base, "pooler", None) is not None
        classifier = getattr(self.model, "classifier", None)
        pooling = self.pooling or ("pooler" if has_pooler and classifier is None else "cls")
        return pooled_head(self.hf_config, self.base, self.model, pooling, self.normalize, self.base.layernorm)
