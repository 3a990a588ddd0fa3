"""Adapters honour or refuse, by name, every config flag that changes the computation; they
refuse heads they do not reproduce; the shapes they give (ModelDims) match the real models."""

from __future__ import annotations

import re

import pytest
import torch
import transformers
from test_exactness import inputs_with_padding_ids, tiny_encoder, tiny_gpt2_with

from coformer.adapters import ADAPTERS, canonicalize
from coformer.errors import ModelError
from coformer.fleet import ModelDims

CONFIGS = {"gpt2": "GPT2Config", "bert": "BertConfig", "roberta": "RobertaConfig", "xlm-roberta": "XLMRobertaConfig"}
CONFIGS |= {"vit": "ViTConfig", "deit": "DeiTConfig"}


@pytest.mark.parametrize("adapter", ADAPTERS, ids=[a.family for a in ADAPTERS])
def test_every_listed_flag_exists_in_the_family_config(adapter):
    for model_type in adapter.model_types:
        config = getattr(transformers, CONFIGS[model_type])()
        listed = (*adapter.honoured, *adapter.refused)
        assert not [name for name in listed if not hasattr(config, name)], "a stale flag name"
        assert not set(adapter.honoured) & set(adapter.refused)


@pytest.mark.parametrize(
    "make,flag",
    [
        (lambda: tiny_gpt2_with(add_cross_attention=True), "add_cross_attention=True"),
        (lambda: tiny_encoder("BertModel", is_decoder=True), "is_decoder=True"),
        (lambda: tiny_encoder("RobertaModel", is_decoder=True, add_cross_attention=True), "is_decoder=True"),
        (lambda: tiny_encoder("ViTModel", pooler_act="relu"), "pooler_act='relu'"),
        (lambda: tiny_encoder("DeiTModel", pooler_output_size=16), "pooler_output_size=16"),
        (lambda: tiny_encoder("ViTModel", image_size=(16, 8)), "image_size=(16, 8)"),
    ],
    ids=["gpt2-cross-attention", "bert-decoder", "roberta-cross-attention", "vit-pooler-act", "deit-pooler-size", "vit-rectangle"],
)
def test_an_unimplemented_flag_is_refused_by_name(make, flag):
    with pytest.raises(ModelError, match=re.escape(f"config {flag} is not implemented")):
        canonicalize(make())


def test_a_head_we_do_not_reproduce_is_refused_not_dropped():
    from transformers import GPT2Config, GPT2ForSequenceClassification

    model = GPT2ForSequenceClassification(GPT2Config(n_embd=32, n_layer=1, n_head=4, vocab_size=100, pad_token_id=0))
    with pytest.raises(ModelError, match="GPT2ForSequenceClassification has a head coformer does not reproduce"):
        canonicalize(model)


@pytest.mark.parametrize(
    "name",
    ["RobertaForSequenceClassification", "XLMRobertaModel", "DeiTModel", "DeiTForImageClassificationWithTeacher"],
)
def test_dims_from_the_config_alone_count_the_parameters_of_the_model(name):
    model = tiny_encoder(name)
    config = model.config
    config.architectures = [name]
    dims = ModelDims.from_hf_config(config)
    canonical = canonicalize(model)
    assert dims == ModelDims.from_canonical(canonical)
    assert dims.parameter_count() == sum(p.numel() for p in model.parameters() if p.requires_grad)


def test_roberta_positions_start_after_the_padding_id_and_skip_it():
    canonical = canonicalize(tiny_encoder("RobertaModel"))
    assert canonical.config.max_tokens == 40 - 2  # positions 0 and 1 are never used by real tokens
    batch = inputs_with_padding_ids()
    positions = canonical.body.embed.positions(batch["input_ids"], past=0)
    assert positions[0, :4].tolist() == [2, 3, 1, 4]


def test_deit_keeps_its_distillation_token_in_every_sub_model():
    from test_exactness import ensemble

    canonical = canonicalize(tiny_encoder("DeiTForImageClassificationWithTeacher"))
    assert canonical.config.tokens(seq_len=999) == (16 // 4) ** 2 + 2
    student = ensemble(canonical, 2, sync=0)
    assert all(sub.embed.cls.shape == (1, 2, 32) for sub in student.submodels)
    assert student.aggregator.head.distillation is not None


def test_gpt2_scaling_flags_reach_every_block():
    canonical = canonicalize(tiny_gpt2_with(scale_attn_weights=False, scale_attn_by_inverse_layer_idx=True))
    assert [b.attn.scale for b in canonical.body.blocks] == [1.0, 1 / 2, 1 / 3]
    upcast = canonicalize(tiny_gpt2_with(reorder_and_upcast_attn=True)).body
    x = torch.randn(1, 5, 32, dtype=torch.bfloat16)
    block = upcast.blocks[0].to(torch.bfloat16)
    assert block.attn.upcast and block.attn.partial(x, None, None, 0).dtype == torch.bfloat16
