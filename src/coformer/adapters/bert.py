"""The BERT family: post-LN encoders with token, position and token-type embeddings.

* BERT (``BertModel`` incl. sentence-transformers' MiniLM, ``BertForSequenceClassification``);
* RoBERTa and XLM-RoBERTa: the same block; positions count non-padding tokens from
  ``pad_token_id + 1``, and the classifier is its own dense + tanh + projection on ``<s>``.
"""

from __future__ import annotations

from coformer.adapters.base import Adapter, Weights, encoder_config, layer_norm, linear, pooled_head, prefixed
from coformer.modeling import HeadConfig, SubModelConfig

ENCODER_FLAGS = (
    "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "hidden_act", "layer_norm_eps",
)  # fmt: skip


class BertAdapter(Adapter):
    model_types = ("bert",)
    family = "bert"
    model_classes = ("BertModel", "BertForSequenceClassification")
    honoured = (*ENCODER_FLAGS, "vocab_size", "max_position_embeddings", "type_vocab_size")
    refused = {"is_decoder": False, "add_cross_attention": False}  # causal self-attention; cross-attention layers
    prefix = "bert"  # attribute of the task models that holds the base model

    def __init__(self, model, pooling=None, normalize=False):
        super().__init__(model, pooling, normalize)
        self.base = getattr(model, self.prefix, model)

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
            padding_idx=self.padding_idx(),
        )

    def padding_idx(self) -> int | None:
        return None  # positions 0, 1, 2, ... whatever the ids

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
        pooler = getattr(self.base, "pooler", None)
        pooling = self.pooling or ("pooler" if pooler is not None else "cls")
        classifier = getattr(self.model, "classifier", None)
        dense = pooler.dense if pooler is not None else None
        return pooled_head(self.hf_config, pooling, self.normalize, None, pooler=dense, classifier=classifier)


class RobertaAdapter(BertAdapter):
    model_types = ("roberta", "xlm-roberta")
    family = "roberta"
    model_classes = (
        "RobertaModel", "RobertaForSequenceClassification", "XLMRobertaModel", "XLMRobertaForSequenceClassification",
    )  # fmt: skip
    honoured = (*BertAdapter.honoured, "pad_token_id")
    prefix = "roberta"

    def padding_idx(self) -> int | None:
        return self.hf_config.pad_token_id  # positions start at pad_token_id + 1, padding keeps pad_token_id

    def head(self) -> tuple[HeadConfig, Weights]:
        classifier = getattr(self.model, "classifier", None)  # dense -> tanh -> out_proj on <s>
        if classifier is None:
            return super().head()
        return pooled_head(
            self.hf_config, "pooler", self.normalize, None, pooler=classifier.dense, classifier=classifier.out_proj
        )
