"""BERT (``BertModel`` incl. sentence-transformers' MiniLM, ``BertForSequenceClassification``): post-LN."""

from __future__ import annotations

from coformer.adapters.base import Adapter, Weights, linear, prefixed
from coformer.errors import ModelError
from coformer.modeling import HeadConfig, SubModelConfig


def layer_norm(module) -> Weights:
    return {"weight": module.weight, "bias": module.bias}


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
        return SubModelConfig(
            family=self.family,
            embedding="bert",
            norm_position="post",
            activation=c.hidden_act,
            causal=False,
            layer_norm_eps=c.layer_norm_eps,
            hidden_size=c.hidden_size,
            channels=list(range(c.hidden_size)),
            head_dim=c.hidden_size // c.num_attention_heads,
            heads_per_block=[c.num_attention_heads] * c.num_hidden_layers,
            neurons_per_block=[c.intermediate_size] * c.num_hidden_layers,
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
        c = self.hf_config
        classifier = getattr(self.model, "classifier", None)
        pooler = getattr(self.base, "pooler", None)
        pooling = self.pooling or ("pooler" if pooler is not None else "cls")
        config = HeadConfig(
            hidden_size=c.hidden_size,
            final_norm=False,
            pooling=pooling,
            normalize=self.normalize,
            projection="classifier" if classifier is not None else "none",
            num_outputs=classifier.out_features if classifier is not None else 0,
            projection_bias=True,
        )
        weights: Weights = {}
        if pooling == "pooler":
            weights |= prefixed("pooler", linear(pooler.dense))
        if classifier is not None:
            weights |= prefixed("projection", linear(classifier))
        return config, weights
