"""Every family through the pipeline's stages from params alone, with the quality metric of its kind.

A tiny random GPT-2 LM and a tiny random ViT classifier, saved as local folders the way a user
would give ``base.model``, go through prepare -> search -> calibrate -> evaluate in-process (the functions the
DVC scripts and the CLI call) with tiny budgets; the calibrate and evaluate metrics carry perplexity
and KL for the LM, top-1 agreement and KL for the classifier. The metric functions themselves are checked
first, on outputs whose result can be worked out by hand.
"""

from __future__ import annotations

import csv
import json
import math
from types import SimpleNamespace

import pytest
import torch
from conftest import tiny_vit
from test_search import tiny_fleet

from coformer.evaluation.quality import perplexity, top1_agreement

BUDGETS = [
    "data.calibration_limit=16", "data.eval_limit=8", "data.max_length=16",
    "search.trials=2", "search.texts=8", "search.fit_texts=6", "search.max_length=16", "search.batch=1", "search.seq_len=16",
    "calibrate.steps_per_stage=2", "calibrate.final_steps=2", "calibrate.batch_size=4", "calibrate.max_length=16",
    "calibrate.warm_start_texts=8", "calibrate.checkpoint_every=0", "calibrate.threads=1",
    "evaluate.methods=[full,aggregate-edge,coformer]", "evaluate.devices=2", "evaluate.batch_sizes=[2]", "evaluate.seq_len=16",
    "evaluate.warmup=0", "evaluate.requests=1", "evaluate.links_mbit=[]", "evaluate.baseline_budget=0", "evaluate.quality_texts=8",
    "evaluate.max_length=16",
]  # fmt: skip


class Fixed:
    """A stand-in model answering every batch with the same output."""

    def __init__(self, output: torch.Tensor):
        self.output = output

    def __call__(self, batch):
        return SimpleNamespace(output=self.output)


def test_perplexity_counts_only_real_next_tokens():
    ids = torch.tensor([[1, 2, 3, 0], [3, 1, 0, 0]])  # (B=2, T=4), right padded
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]])
    logits = torch.zeros(2, 4, 5)  # (B, T, V): uniform everywhere ...
    logits[0, 0, 2] = logits[0, 1, 3] = logits[1, 0, 1] = 50.0  # ... but certain of each real next token
    ppl = perplexity(Fixed(logits), [{"input_ids": ids, "attention_mask": mask}])
    assert ppl == pytest.approx(1.0, abs=1e-6)  # the padded targets (uniform, 1/5) are left out
    assert perplexity(Fixed(torch.zeros(2, 4, 5)), [{"input_ids": ids, "attention_mask": mask}]) == pytest.approx(5.0)


def test_top1_agreement_is_the_share_of_matching_argmax():
    teacher = Fixed(torch.tensor([[0.9, 0.1, 0.0], [0.0, 1.0, 0.0], [0.2, 0.3, 0.5], [1.0, 0.0, 0.0]]))  # classes 0 1 2 0
    student = Fixed(torch.tensor([[0.5, 0.1, 0.0], [0.0, 2.0, 0.0], [0.9, 0.3, 0.5], [3.0, 0.0, 0.0]]))  # classes 0 1 0 0
    assert top1_agreement(teacher, student, [{}]) == 0.75


@pytest.fixture(scope="module")
def tracking(tmp_path_factory):
    """One MLflow store and one Ray for the module (run_search reuses a running Ray)."""
    from coformer.search.tuning import ray_session

    with ray_session(num_cpus=2):
        yield f"sqlite:///{tmp_path_factory.mktemp('mlflow')}/m.db"


def run_stages(model, folder, tracking, monkeypatch) -> dict:
    """prepare -> search -> calibrate on the saved ``model`` folder; the calibrate metrics."""
    from coformer.adapters import canonicalize
    from coformer.params import load_params
    from coformer.stages import calibrate, evaluate, prepare, search

    torch.set_num_threads(1)
    monkeypatch.chdir(folder)  # MLflow puts artifacts under ./mlruns
    tiny_fleet(canonicalize(model)).save(folder / "fleet.json")
    params = load_params(None, [f"base.model={folder / 'model'}", f"base.tracking_uri={tracking}", *BUDGETS])
    prepare.run(params, folder / "data", folder / "prepare.json")
    search.run(params, folder / "data", folder / "fleet.json", folder / "search")
    assert (folder / "search" / "policy.json").is_file()
    calibrate.run(params, folder / "data", folder / "search", folder / "calibrate")
    assert (folder / "calibrate" / "aggregator" / "model.safetensors").is_file()
    evaluate.run(params, folder / "data", folder / "calibrate", folder / "fleet.json", None, folder / "evaluate")
    return json.loads((folder / "calibrate" / "metrics.json").read_text())


def evaluated(folder) -> dict:
    """The evaluate stage's metrics, after checking every measured series matched the executor (a
    searched policy on more devices than cores is the cost model's only)."""
    metrics = json.loads((folder / "evaluate" / "metrics.json").read_text())
    assert set(metrics["methods"]) == {"full", "aggregate-edge", "coformer"}
    measured = [r for r in csv.DictReader(open(folder / "evaluate" / "methods.csv")) if r["measured"] == "True"]
    assert measured and all(float(r["runtime_error"]) < 1e-5 for r in measured)
    return metrics


@pytest.mark.slow
def test_gpt2_lm_reports_perplexity_and_kl(tmp_path, tracking, monkeypatch):
    from transformers import GPT2Config, GPT2LMHeadModel

    from coformer.loading import load_model

    tokenizer = load_model().processor  # MiniLM's: a real tokenizer, offline
    torch.manual_seed(0)
    config = GPT2Config(n_embd=32, n_layer=2, n_head=4, vocab_size=tokenizer.vocab_size, n_positions=64)
    model = GPT2LMHeadModel(config).eval()
    model.save_pretrained(tmp_path / "model")
    tokenizer.save_pretrained(tmp_path / "model")
    metrics = run_stages(model, tmp_path, tracking, monkeypatch)
    for key in ("before_perplexity", "after_perplexity", "teacher_perplexity", "before_kl", "after_kl", "after_cosine"):
        assert math.isfinite(metrics[key]), (key, metrics)
    assert metrics["teacher_perplexity"] > 1 and metrics["after_perplexity"] > 1
    assert not any(k.endswith("agreement") for k in metrics)
    evaluation = evaluated(tmp_path)
    assert evaluation["task"] == "lm" and evaluation["methods"]["coformer"]["perplexity"] == pytest.approx(metrics["after_perplexity"], rel=1e-4)


@pytest.mark.slow
def test_vit_classifier_reports_agreement_and_kl(tmp_path, tracking, monkeypatch):
    from transformers import ViTImageProcessor

    model = tiny_vit(classifier=True)  # 16 px images, 3 classes
    model.save_pretrained(tmp_path / "model")
    ViTImageProcessor(size={"height": 16, "width": 16}).save_pretrained(tmp_path / "model")
    metrics = run_stages(model, tmp_path, tracking, monkeypatch)
    assert json.loads((tmp_path / "prepare.json").read_text())["image_side_px"] == 16  # synthetic images at the model's size
    for key in ("before_agreement", "after_agreement"):
        assert 0 <= metrics[key] <= 1, (key, metrics)
    assert metrics["after_kl"] >= 0 and math.isfinite(metrics["after_kl"])
    assert not any(k.endswith("perplexity") or k.startswith("teacher_") for k in metrics)
    evaluation = evaluated(tmp_path)
    assert evaluation["task"] == "classifier" and evaluation["methods"]["coformer"]["agreement"] == pytest.approx(metrics["after_agreement"])
