"""Policies: building from shares and importance, and every invalid case with its message."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_bert, token_inputs

from coformer.adapters import canonicalize
from coformer.decompose import (
    DevicePolicy,
    DeviceShare,
    ModelShape,
    Policy,
    build_policy,
    compute_importance,
    decompose,
    quotas,
    shape_of,
)
from coformer.decompose.builder import block_quotas, deal
from coformer.errors import CoFormerError, PolicyError

SHAPE = ModelShape(num_layers=2, num_heads=4, ffn_size=8, hidden_size=16)


def device(name="a", heads=([0, 1], [0]), neurons=([0], [1, 2]), channels=None) -> DevicePolicy:
    return DevicePolicy(name=name, heads=[list(h) for h in heads], neurons=[list(n) for n in neurons], channels=channels)


def policy(*devices, sync=0, shape=SHAPE) -> Policy:
    return Policy(shape=shape, sync=sync, devices=list(devices))


INVALID = [
    ("overlap", lambda: policy(device("a"), device("b", heads=([1], [2]), neurons=([3], [4]))), "head 1 of block 0 is dealt to both 'a' and 'b'"),
    ("out of range", lambda: policy(device(heads=([0, 4], [0]))), r"heads of block 0 on device 'a': indices \[4\] are out of range 0..3"),
    ("negative", lambda: policy(device(neurons=([-1], [1]))), r"indices \[-1\] are out of range"),
    ("twice", lambda: policy(device(neurons=([1, 1], [2]))), "an index is listed twice"),
    ("nothing", lambda: policy(device("a"), device("b", heads=([], []), neurons=([], []))), "device 'b' holds no head and no neuron"),
    ("block count", lambda: policy(device(heads=([0],))), "device 'a' lists heads for 1 blocks; the model has 2"),
    ("bad sync", lambda: policy(device(), sync=3), r"sync interval s=3 is invalid: use 0 .* or 2..2"),
    ("negative sync", lambda: policy(device(), sync=-1), "sync interval s=-1 is invalid"),
    ("narrow at sync 1", lambda: policy(device(channels=[0, 1, 2]), sync=1), "narrows its residual stream, but sync=1"),
    ("no channels", lambda: policy(device(channels=[])), "keeps no hidden channel"),
    ("channel range", lambda: policy(device(channels=[3, 16])), r"channels of device 'a': indices \[16\] are out of range 0..15"),
    ("no devices", lambda: policy(), "the policy has no device"),
    ("same names", lambda: policy(device("a"), device("a", heads=([2], [1]), neurons=([1], [3]))), "device names must be unique"),
]


@pytest.mark.parametrize("make,message", [(m, msg) for _, m, msg in INVALID], ids=[c[0] for c in INVALID])
def test_invalid_policies_name_the_problem(make, message):
    with pytest.raises(PolicyError, match=message):
        make()


def test_policy_for_another_model_is_refused():
    canonical = canonicalize(tiny_bert())
    with pytest.raises(PolicyError, match="policy was made for a model of shape"):
        decompose(canonical, policy(device()))


def test_policy_json_round_trip_and_bad_file(tmp_path):
    p = policy(device("a"), device("b", heads=([2, 3], [1]), neurons=([5], [0])), sync=2)
    assert Policy.load(p.save(tmp_path / "policy.json")) == p
    (tmp_path / "broken.json").write_text('{"shape": {"num_layers": 2}}')
    with pytest.raises(PolicyError, match="is not a valid policy"):
        Policy.load(tmp_path / "broken.json")
    with pytest.raises(PolicyError, match="no policy at"):
        Policy.load(tmp_path / "missing.json")


@pytest.mark.parametrize("total,shares", [(12, [3, 2, 1]), (7, [1, 1, 1]), (1536, [0.5, 0.3, 0.2]), (4, [4, 3, 2, 1])])
def test_quotas_are_exact_and_proportional(total, shares):
    counts = quotas(total, shares)
    assert sum(counts) == total
    for c, s in zip(counts, shares):
        assert abs(c - total * s / sum(shares)) < 1


@pytest.mark.parametrize("total,shares,blocks", [(4, [3, 2, 1], 3), (12, [0.45, 0.35, 0.2], 6), (5, [1, 0, 1], 4)])
def test_block_quotas_stay_proportional_over_blocks(total, shares, blocks):
    per_block = block_quotas(total, shares, blocks)
    assert all(sum(c) == total and min(c) >= 0 for c in per_block)
    for k, s in enumerate(shares):
        assert abs(sum(c[k] for c in per_block) - blocks * total * s / sum(shares)) < 1


def test_dealing_rules():
    ranked = [5, 2, 7, 0, 1, 3, 6, 4]  # most important first
    assert deal(ranked, [4, 4], "grouped") == [[0, 2, 5, 7], [1, 3, 4, 6]]
    balanced = deal(ranked, [4, 4], "balanced")
    assert balanced == [[1, 5, 6, 7], [0, 2, 3, 4]]  # ranks 0,2,4,6 and 1,3,5,7
    assert deal(ranked, [6, 2], "balanced")[1] == [2, 3]  # ranks 1 and 5: spread, not the top two


def test_builder_keeps_the_most_important_units_and_narrows_streams():
    canonical = canonicalize(tiny_bert())
    scores = compute_importance(canonical.body, "magnitude")
    shares = [DeviceShare(name="big", heads=3, neurons=3), DeviceShare(name="small", heads=1, neurons=1, channels=0.5)]
    p = build_policy(shape_of(canonical), scores, shares, keep=0.5, sync=0)
    for b in range(p.shape.num_layers):
        kept = sorted(p.devices[0].heads[b] + p.devices[1].heads[b])
        assert kept == sorted(torch.topk(scores.heads[b], 2).indices.tolist())
        assert len(p.devices[0].neurons[b]) == 24 and len(p.devices[1].neurons[b]) == 8  # 32 kept, 3:1
    assert p.devices[0].channels is None
    assert p.devices[1].channels == sorted(torch.topk(scores.channels, 16).indices.tolist())
    with pytest.raises(PolicyError, match="keep=0"):
        build_policy(shape_of(canonical), scores, shares, keep=0)


def test_importance_is_deterministic_and_data_driven():
    canonical = canonicalize(tiny_bert())
    batches = [token_inputs(seed=s) for s in range(2)]
    first = compute_importance(canonical.body, "activation", batches)
    again = compute_importance(canonical.body, "activation", batches)
    weights = compute_importance(canonical.body, "magnitude")
    assert torch.equal(first.heads, again.heads) and torch.equal(first.neurons, again.neurons)
    assert first.heads.shape == (3, 4) and first.neurons.shape == (3, 64) and first.channels.shape == (32,)
    assert (first.heads > 0).all() and (first.neurons >= 0).all()
    assert not torch.allclose(first.neurons / first.neurons.sum(), weights.neurons / weights.neurons.sum())
    with pytest.raises(CoFormerError, match="unknown importance method 'taylor'"):
        compute_importance(canonical.body, "taylor")
