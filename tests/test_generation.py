"""Incremental decoding with per-device KV caches equals recomputing the whole sequence."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_gpt2
from test_exactness import ensemble
from torch.testing import assert_close

from coformer.adapters import canonicalize

PROMPT, STEPS = 5, 20


@pytest.mark.parametrize("sync", [0, 1, 2])
@torch.no_grad()
def test_kv_cache_matches_full_recomputation(sync):
    model = tiny_gpt2(layers=4)
    student = ensemble(canonicalize(model), 3, sync=sync)
    ids = torch.randint(0, 100, (2, PROMPT + STEPS), generator=torch.Generator().manual_seed(1))
    full = student({"input_ids": ids}).output  # (B, T, V)

    caches = student.new_caches()
    prefill = student({"input_ids": ids[:, :PROMPT]}, caches=caches).output
    assert_close(prefill, full[:, :PROMPT], atol=1e-5, rtol=1e-5)
    for t in range(PROMPT, PROMPT + STEPS):
        step = student({"input_ids": ids[:, t : t + 1]}, caches=caches).output  # (B, 1, V)
        assert_close(step[:, 0], full[:, t], atol=1e-5, rtol=1e-5)
    assert all(c.length == PROMPT + STEPS for c in caches)


@torch.no_grad()
def test_kv_cache_with_left_context_mask():
    """A padded prompt: the mask covers past + new tokens at every step."""
    model = tiny_gpt2(layers=2)
    student = ensemble(canonicalize(model), 2, sync=0)
    ids = torch.randint(0, 100, (2, 8), generator=torch.Generator().manual_seed(2))
    mask = torch.ones(2, 8, dtype=torch.long)
    mask[1, :2] = 0  # row 1 starts with two pads
    full = student({"input_ids": ids, "attention_mask": mask}).output
    caches = student.new_caches()
    student({"input_ids": ids[:, :4], "attention_mask": mask[:, :4]}, caches=caches)
    for t in range(4, 8):
        step = student({"input_ids": ids[:, t : t + 1], "attention_mask": mask[:, : t + 1]}, caches=caches).output
        assert_close(step[:, 0], full[:, t], atol=1e-5, rtol=1e-5)
