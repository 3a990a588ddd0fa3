"""BERT (``BertModel`` incl. sentence-transformers' MiniLM, ``BertForSequenceClassification``): post-LN."""

from __future__ import annotations

from coformer.adapters.base import Adapter, Weights, encoder_config, layer_norm, linear, pooled_head, prefixed
from coformer.errors import ModelError
from coformer.modeling import HeadConfig, SubModelConfig


class BertAdapter(Adapter):
    model_types = ("bert",)
    family = "bert"

    def __init__(self, model, pooling=None, normalize=False):
        super().__init__(model, pooling, normalize)
        self.base = getattr(model, "bert", model)
        kind = getattr(self.hf_config, "position_embedding_type", "absolute")
        if kind != "absolute":
            raise ModelError(f"BERT position_embedding_type={kind!r} is not supported (only 'absolute')")

    def body_config(self) -> SubModelConfig:
        c = self.hf_config
        return encoder_config(
            self.family,
            c,
            embedding="bert",
            norm_position="post",
            causal=False,
            vocab_size=c.vocab_size,
            max_positions=c.max_position_embeddings,
            type_vocab_size=c.type_vocab_size,
        )

    def embedding_weights(self) -> Weights:
        e = self.base.embeddings
        return {
            "word.weight": e.word_embeddings.weight,
            "position.weight": e.position_embeddings.weight,
            "token_type.weight": e.token_type_embeddings.weight,
        } | prefixed("norm", layer_norm(e.LayerNorm))

    def block_weights(self, i: int) -> Weights:
        layer = self.base.encoder.layer[i]
        att = layer.attention
        return (
            prefixed("attn.q", linear(att.self.query))
            | prefixed("attn.k", linear(att.self.key))
            | prefixed("attn.v", linear(att.self.value))
            | prefixed("attn.o", linear(att.output.dense))
            | prefixed("norm1", layer_norm(att.output.LayerNorm))
            | prefixed("ffn.fc1", linear(layer.intermediate.dense))
            | prefixed("ffn.fc2", linear(layer.output.dense))
            | prefixed("norm2", layer_norm(layer.output.LayerNorm))
        )

    def head(self) -> tuple[HeadConfig, Weights]:
        pooling = self.pooling or ("pooler" if getattr(self.base, "pooler", None) is not None else "cls")
        return pooled_head(self.hf_config, self.base, self.model, pooling, self.normalize, final_norm=None)
