"""The invariant: every unit dealt out and partial sums all-reduced every sub-layer (sync=1)
reproduces the original model, for every family, any device count and uneven shares."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import image_inputs, tiny_bert, tiny_gpt2, tiny_vit, token_inputs
from torch.testing import assert_close

from coformer.adapters import canonicalize
from coformer.decompose import DeviceShare, build_policy, compute_importance, decompose, shape_of
from coformer.executor import Ensemble, Teacher

UNEVEN = {2: [3, 1], 3: [3, 2, 1], 4: [4, 3, 2, 1]}


def ensemble(canonical, devices: int, sync: int, importance: str = "magnitude") -> Ensemble:
    shares = [DeviceShare(name=f"d{k}", heads=s, neurons=s + 0.5) for k, s in enumerate(UNEVEN[devices])]
    scores = compute_importance(canonical.body, importance)
    policy = build_policy(shape_of(canonical), scores, shares, sync=sync)
    return Ensemble(*decompose(canonical, policy), sync=sync)


def reference(model, inputs):
    """(last hidden state, output) exactly as the Hugging Face model computes them."""
    hidden = model.base_model(**inputs).last_hidden_state
    out = model(**inputs)
    if "logits" in out:
        return hidden, out.logits
    if out.get("pooler_output") is not None:
        return hidden, out.pooler_output
    return hidden, hidden


def tiny_gpt2_with(**flags):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    return GPT2LMHeadModel(GPT2Config(n_embd=32, n_layer=3, n_head=4, vocab_size=100, n_positions=64, **flags)).eval()


def tiny_encoder(name: str, **flags):
    """A tiny random transformers model by class name (RoBERTa, XLM-RoBERTa, ViT, DeiT and their heads)."""
    import transformers

    torch.manual_seed(0)
    cls = getattr(transformers, name)
    shape = dict(hidden_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=64, num_labels=3)
    if "Image" in name or name.startswith(("ViT", "DeiT")):
        shape |= dict(image_size=16, patch_size=4)
    else:
        shape |= dict(vocab_size=100, max_position_embeddings=40)
    return cls(cls.config_class(**shape | flags)).eval()


def inputs_with_padding_ids(pad: int = 1):
    """Token inputs where some real tokens carry the padding id (RoBERTa's positions skip them)."""
    batch = token_inputs()
    batch["input_ids"][0, 2] = pad
    batch["input_ids"][1, -1] = pad
    return batch


CASES = [
    ("gpt2-lm", lambda: tiny_gpt2(lm_head=True), token_inputs),
    ("gpt2", lambda: tiny_gpt2(lm_head=False), token_inputs),
    ("bert", lambda: tiny_bert(), token_inputs),
    ("bert-cls", lambda: tiny_bert(classifier=True), token_inputs),
    ("vit", lambda: tiny_vit(), image_inputs),
    ("vit-cls", lambda: tiny_vit(classifier=True), image_inputs),
    ("gpt2-unscaled", lambda: tiny_gpt2_with(scale_attn_weights=False), token_inputs),
    ("gpt2-inverse-layer", lambda: tiny_gpt2_with(scale_attn_by_inverse_layer_idx=True), token_inputs),
    ("gpt2-upcast", lambda: tiny_gpt2_with(reorder_and_upcast_attn=True), token_inputs),
    ("vit-no-qkv-bias", lambda: tiny_encoder("ViTForImageClassification", qkv_bias=False), image_inputs),
    ("roberta", lambda: tiny_encoder("RobertaModel"), inputs_with_padding_ids),
    ("roberta-cls", lambda: tiny_encoder("RobertaForSequenceClassification"), inputs_with_padding_ids),
    ("xlm-roberta", lambda: tiny_encoder("XLMRobertaModel"), inputs_with_padding_ids),
    ("xlm-roberta-cls", lambda: tiny_encoder("XLMRobertaForSequenceClassification"), inputs_with_padding_ids),
    ("deit", lambda: tiny_encoder("DeiTModel"), image_inputs),
    ("deit-cls", lambda: tiny_encoder("DeiTForImageClassification"), image_inputs),
    ("deit-teacher", lambda: tiny_encoder("DeiTForImageClassificationWithTeacher"), image_inputs),
]


@pytest.mark.parametrize("devices", [2, 3, 4])
@pytest.mark.parametrize("name,make,inputs", CASES, ids=[c[0] for c in CASES])
@torch.no_grad()
def test_sync1_with_all_units_equals_original(name, make, inputs, devices):
    model = make()
    batch = inputs()
    hidden, output = reference(model, batch)
    got = ensemble(canonicalize(model), devices, sync=1)(batch)
    assert_close(got.hidden, hidden, atol=1e-4, rtol=1e-4)
    assert_close(got.output, output, atol=1e-4, rtol=1e-4)


@torch.no_grad()
def test_canonical_teacher_equals_original_with_padding(minilm, minilm_inputs):
    out = minilm.model(**minilm_inputs).last_hidden_state
    mask = minilm_inputs["attention_mask"].unsqueeze(-1).float()
    sentence = F.normalize((out * mask).sum(1) / mask.sum(1), dim=-1)
    teacher = Teacher(minilm.canonical.body, minilm.canonical.head)(minilm_inputs)
    assert_close(teacher.hidden, out, atol=1e-4, rtol=1e-4)
    assert_close(teacher.output, sentence, atol=1e-4, rtol=1e-4)


@torch.no_grad()
def test_minilm_sync1_three_devices_is_exact(minilm, minilm_inputs):
    out = minilm.model(**minilm_inputs).last_hidden_state
    got = ensemble(minilm.canonical, 3, sync=1)(minilm_inputs)
    assert_close(got.hidden, out, atol=1e-4, rtol=1e-4)
    teacher = Teacher(minilm.canonical.body, minilm.canonical.head)(minilm_inputs)
    assert_close(got.output, teacher.output, atol=1e-4, rtol=1e-4)


@torch.no_grad()
def test_minilm_independent_streams_differ_before_calibration(minilm, minilm_inputs):
    teacher = Teacher(minilm.canonical.body, minilm.canonical.head)(minilm_inputs).output
    student = ensemble(minilm.canonical, 3, sync=0)(minilm_inputs).output
    cosine = F.cosine_similarity(student, teacher, dim=-1).mean().item()
    print(f"\nMiniLM, sync=0, 3 sub-models, uncalibrated: teacher-relative cosine {cosine:.3f}")
    assert torch.isfinite(student).all()
    assert 0.0 < cosine < 0.999
