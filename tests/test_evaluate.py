"""The evaluation: its params section, its Single-Edge sizing, and one small end-to-end run of
``run_evaluation`` (real device processes on a tiny model) with every file it promises."""

from __future__ import annotations

import csv
import json

import pytest
import torch

from coformer.adapters import canonicalize
from coformer.calibrate import CalibrationConfig, build_student, save_student
from coformer.data import load_pairs, load_texts
from coformer.decompose import DeviceShare, build_policy, compute_importance, shape_of
from coformer.errors import CoFormerError
from coformer.evaluation import EvaluateConfig, run_evaluation
from coformer.evaluation.methods import fitting_keep
from coformer.fleet import ModelDims, Workload, catalog_profile, load_fleet
from coformer.loading import LoadedModel, resolve
from coformer.params import ParamsError, load_params

@pytest.mark.parametrize("override,key", [("evaluate.requests=0", "evaluate.requests"), ("evaluate.repeats=3", "evaluate.repeats")])
def test_a_bad_value_names_its_key(override, key):
    with pytest.raises(ParamsError, match=key):
        load_params(None, [override])


def test_single_edge_is_compressed_to_a_sub_model_size_that_fits(minilm):
    dims = ModelDims.from_canonical(minilm.canonical)
    fleet = load_fleet("default")
    name, keep = fitting_keep(dims, fleet, Workload(batch=8, seq_len=128), devices=2)
    assert name in fleet.names and 0 < keep < 1


@pytest.fixture(scope="module")
def tiny_loaded():
    """A tiny random BERT with the MiniLM vocabulary, so the bundled tokenizer feeds it real text."""
    from transformers import AutoTokenizer, BertConfig, BertModel

    torch.manual_seed(0)
    config = BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, vocab_size=30522)
    model = BertModel(config).eval()
    return LoadedModel("tiny", "tiny", model, AutoTokenizer.from_pretrained(resolve("default")), canonicalize(model, "mean", True))


@pytest.mark.parametrize("family", ["gpt2", "vit"])
def test_a_model_it_cannot_score_is_refused_by_name(family, tmp_path):
    """An LM or an image classifier would get embedding scores that mean nothing: refused up front."""
    from conftest import tiny_gpt2, tiny_vit

    model = tiny_gpt2() if family == "gpt2" else tiny_vit(classifier=True)
    loaded = LoadedModel(f"tiny-{family}", "", model, None, canonicalize(model))
    with pytest.raises(CoFormerError, match=rf"base.model 'tiny-{family}' is an? (language-model|image) model.*dvc repro package"):
        run_evaluation(loaded, None, "default", [], [], [], tmp_path / "out", EvaluateConfig(), CalibrationConfig())
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_run_evaluation_writes_every_output(tiny_loaded, tmp_path):
    canonical = tiny_loaded.canonical
    shares = [DeviceShare(name=f"core{k}", heads=1, neurons=1) for k in range(2)]
    policy = build_policy(shape_of(canonical), compute_importance(canonical.body, "magnitude"), shares, sync=0)
    calibrated = save_student(tmp_path / "calibrated", policy, build_student(canonical, policy))  # an equal s=0 split
    config = EvaluateConfig(
        methods=["full", "aggregate-edge", "coformer"], devices=2, batch_sizes=[2], warmup=0, requests=1, links_mbit=[],
        importance="magnitude", quality_texts=8, quality_pairs=8, seq_len=16, max_length=16,
    )
    texts = load_texts("builtin", "evaluation", limit=16)
    profile = catalog_profile("core", "raspberry-pi-5", "ethernet-1g")
    out = tmp_path / "evaluate"
    metrics = run_evaluation(
        tiny_loaded, calibrated, "default", texts, load_pairs("evaluation", limit=8), texts, out, config, CalibrationConfig(), profile=profile
    )
    for name in ("metrics.json", "methods.csv", "front.csv", "memory.csv", "fleet.csv", "front.png", "memory.png", "latency_split.png", "report.md"):
        assert (out / name).stat().st_size > 0, name
    assert json.loads((out / "metrics.json").read_text())["targets"] == json.loads(json.dumps(metrics["targets"]))
    methods = metrics["methods"]
    assert set(methods) == {"full", "aggregate-edge", "coformer"}
    assert methods["aggregate-edge"]["budget"].startswith("the calibrate stage")  # the searched folder is the equal split: reused
    assert methods["full"]["param_ratio"] == 1 and methods["aggregate-edge"]["param_ratio"] < 1
    assert metrics["targets"]["s0_speedup"]["value"] > 0
    rows = list(csv.DictReader(open(out / "methods.csv")))
    assert {r["method"] for r in rows} == {"full", "aggregate-edge", "coformer"}
    assert all(float(r["runtime_error"]) < 1e-5 and float(r["predicted_ms"]) > 0 for r in rows)  # processes = executor
    assert float(next(r for r in rows if r["method"] == "full")["request_cosine"]) == pytest.approx(1.0, abs=1e-5)
    assert {"full", "aggregate-edge", "distri-edge", "pipe-edge", "single-edge"} <= set(metrics["fleet"])
    assert metrics["paper"]["coformer"]["speedup_vs_full"] > 1
