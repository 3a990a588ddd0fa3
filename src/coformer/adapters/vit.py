"""ViT (``ViTModel``, ``ViTForImageClassification``): pre-LN, patch embedding, CLS token."""

from __future__ import annotations

from coformer.adapters.base import Adapter, Weights, linear, prefixed
from coformer.modeling import HeadConfig, SubModelConfig


def layer_norm(module) -> Weights:
    return {"weight": module.weight, "bias": module.bias}


class ViTAdapter(Adapter):
    model_types = ("vit",)
    family = "vit"

    def __init__(self, model, pooling=None, normalize=False):
        super().__init__(model, pooling, normalize)
        self.base = getattr(model, "vit", model)

    def body_config(self) -> SubModelConfig:
        c = self.hf_config
        return SubModelConfig(
            family=self.family,
            embedding="vit",
            norm_position="pre",
            activation=c.hidden_act,
            causal=False,
            layer_norm_eps=c.layer_norm_eps,
            hidden_size=c.hidden_size,
            channels=list(range(c.hidden_size)),
            head_dim=c.hidden_size // c.num_attention_heads,
            heads_per_block=[c.num_attention_heads] * c.num_hidden_layers,
            neurons_per_block=[c.intermediate_size] * c.num_hidden_layers,
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
        c = self.hf_config
        classifier = getattr(self.model, "classifier", None)
        pooler = getattr(self.base, "pooler", None)
        pooling = self.pooling or ("cls" if classifier is not None or pooler is None else "pooler")
        config = HeadConfig(
            hidden_size=c.hidden_size,
            final_norm=True,
            layer_norm_eps=c.layer_norm_eps,
            pooling=pooling,
            normalize=self.normalize,
            projection="classifier" if classifier is not None else "none",
            num_outputs=classifier.out_features if classifier is not None else 0,
            projection_bias=True,
        )
        weights = prefixed("norm", layer_norm(self.base.layernorm))
        if pooling == "pooler":
            weights |= prefixed("pooler", linear(pooler.dense))
        if classifier is not None:
            weights |= prefixed("projection", linear(classifier))
        return config, weights
