"""The ViT family: pre-LN encoders over image patches with learned class tokens.

* ViT (``ViTModel``, ``ViTForImageClassification``): one CLS token;
* DeiT (``DeiTModel``, ``DeiTForImageClassification``, ``DeiTForImageClassificationWithTeacher``):
  a distillation token after the CLS token; the teacher variant averages a classifier on each.
"""

from __future__ import annotations

import torch
from torch import nn

from coformer.adapters.base import Adapter, Weights, encoder_config, layer_norm, linear, pooled_head, prefixed, refusal
from coformer.modeling import HeadConfig, SubModelConfig


def side(config, name: str) -> int:
    """A square size (``image_size``, ``patch_size``) as one int; rectangles are refused."""
    value = getattr(config, name)
    sides = set(value) if isinstance(value, (list, tuple)) else {value}
    if len(sides) != 1:
        raise refusal(config, name, value, "square images and patches")
    return int(sides.pop())


class ViTAdapter(Adapter):
    model_types = ("vit",)
    family = "vit"
    model_classes = ("ViTModel", "ViTForImageClassification")
    honoured = (
        "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "hidden_act", "layer_norm_eps",
        "image_size", "patch_size", "num_channels", "qkv_bias",
    )  # fmt: skip
    refused = {"pooler_act": "tanh", "pooler_output_size": lambda c: c.hidden_size}  # the pooler is tanh(d x d)
    prefix = "vit"  # attribute of the task models that holds the base model
    class_tokens = 1  # learned tokens ahead of the patches

    def __init__(self, model, pooling=None, normalize=False):
        super().__init__(model, pooling, normalize)
        self.base = getattr(model, self.prefix, model)

    def body_config(self) -> SubModelConfig:
        c = self.hf_config
        return encoder_config(
            self.family,
            c,
            embedding="vit",
            norm_position="pre",
            causal=False,
            image_size=side(c, "image_size"),
            patch_size=side(c, "patch_size"),
            num_channels=c.num_channels,
            class_tokens=self.class_tokens,
            qkv_bias=c.qkv_bias,
        )

    def tokens(self) -> torch.Tensor:
        """(1, class_tokens, d): the learned tokens, in order."""
        return self.base.embeddings.cls_token

    def embedding_weights(self) -> Weights:
        e = self.base.embeddings
        return {"cls": self.tokens(), "position": e.position_embeddings} | prefixed(
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
        pooler = getattr(self.base, "pooler", None)
        classifier = getattr(self.model, "classifier", None)
        pooling = self.pooling or ("pooler" if pooler is not None and classifier is None else "cls")
        dense = pooler.dense if pooler is not None else None
        return pooled_head(self.hf_config, pooling, self.normalize, self.base.layernorm, pooler=dense, classifier=classifier)


class DeiTAdapter(ViTAdapter):
    model_types = ("deit",)
    family = "deit"
    model_classes = ("DeiTModel", "DeiTForImageClassification", "DeiTForImageClassificationWithTeacher")
    prefix = "deit"
    class_tokens = 2  # CLS, then the distillation token

    def tokens(self) -> torch.Tensor:
        e = self.base.embeddings
        return torch.cat([e.cls_token, e.distillation_token], dim=1)  # (1, 2, d)

    def head(self) -> tuple[HeadConfig, Weights]:
        classifier = getattr(self.model, "cls_classifier", None)  # with teacher: mean of two classifiers
        if classifier is None:
            return super().head()
        if not isinstance(classifier, nn.Linear):
            raise refusal(self.hf_config, "num_labels", self.hf_config.num_labels, "a teacher head with num_labels >= 1")
        return pooled_head(
            self.hf_config,
            "cls",
            self.normalize,
            self.base.layernorm,
            classifier=classifier,
            distillation=self.model.distillation_classifier,
        )
