"""The evaluation: its params section, its Single-Edge sizing, and small end-to-end runs of
``run_evaluation`` (real device processes on tiny models): a sentence-embedding BERT with every
file it promises, a GPT-2 LM scored by perplexity and KL, a ViT classifier by top-1 agreement."""

from __future__ import annotations

import csv
import json
import math

import pytest
import torch

from coformer.adapters import canonicalize
from coformer.calibrate import CalibrationConfig, build_student, save_student
from coformer.data import load_pairs, load_texts, synthetic_images
from coformer.data.prepared import Prepared, prepare_data
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


def test_rounds_pool_every_timed_request():
    """Runs of one plan in interleaved rounds become one result: every request counted once."""
    import numpy as np

    from coformer.runtime.results import RunResult, SetResult

    def run(latencies, rss):
        s = SetResult("b8-fp32", "fp32", 1, np.array(latencies), np.array(latencies) / 2, np.array([10.0, 20.0]), torch.zeros(1))
        return RunResult(["d0", "d1"], [0, 1], [4, 4], rss, {"b8-fp32": s}, "loopback", 1.0)

    pooled = RunResult.pooled([run([0.3, 0.5], [100, 200]), run([0.4, 0.2], [150, 120])])
    s = pooled.sets["b8-fp32"]
    assert s.latency_s.tolist() == [0.3, 0.5, 0.4, 0.2] and s.median_s == pytest.approx(0.35) and s.compute_s.tolist() == [0.15, 0.25, 0.2, 0.1]
    assert pooled.rss_bytes == [150, 200] and pooled.seconds == 2.0 and s.bytes_sent.tolist() == [10.0, 20.0]


def tiny_lm() -> tuple[LoadedModel, Prepared]:
    """A tiny random GPT-2 LM over the MiniLM vocabulary (a real tokenizer, offline) and real text."""
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    tokenizer = AutoTokenizer.from_pretrained(resolve("default"))
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(n_embd=32, n_layer=2, n_head=4, vocab_size=tokenizer.vocab_size, n_positions=64)).eval()
    texts = load_texts("builtin", "evaluation", limit=16)
    return LoadedModel("tiny-gpt2", "", model, tokenizer, canonicalize(model)), Prepared("tokens", {"calibration": texts, "evaluation": texts}, [])


def tiny_image_classifier() -> tuple[LoadedModel, Prepared]:
    """A tiny random ViT classifier (16 px images, 3 classes) and the prepare stage's synthetic images."""
    from conftest import tiny_vit
    from transformers import ViTImageProcessor

    model = tiny_vit(classifier=True)
    processor = ViTImageProcessor(size={"height": 16, "width": 16})
    return LoadedModel("tiny-vit", "", model, processor, canonicalize(model)), prepare_data("pixels", "builtin", "text", 0, 16, 8, 16)


def tiny_text_classifier(folder) -> tuple[LoadedModel, Prepared]:
    """A tiny random BERT sentence classifier (3 classes) and a labelled JSONL file prepared with data.label_field."""
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    tokenizer = AutoTokenizer.from_pretrained(resolve("default"))
    torch.manual_seed(0)
    config = BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, vocab_size=tokenizer.vocab_size, num_labels=3)
    model = BertForSequenceClassification(config).eval()
    texts = load_texts("builtin", "evaluation", limit=40)
    (folder / "labelled.jsonl").write_text("".join(json.dumps({"text": t, "label": len(t) % 3}) + "\n" for t in texts))
    data = prepare_data("tokens", str(folder / "labelled.jsonl"), "text", 0, None, None, 224, "label")
    return LoadedModel("tiny-classifier", "", model, tokenizer, canonicalize(model)), data


def tiny_labelled_image_classifier(folder) -> tuple[LoadedModel, Prepared]:
    """A tiny random ViT classifier (3 classes) and an image folder whose class sub-folders are the labels."""
    from conftest import tiny_vit
    from transformers import ViTImageProcessor

    for k, image in enumerate(synthetic_images(30, 16, seed=1)):
        (folder / "images" / f"c{k % 3}").mkdir(parents=True, exist_ok=True)
        image.save(folder / "images" / f"c{k % 3}" / f"{k}.png")
    model = tiny_vit(classifier=True)
    processor = ViTImageProcessor(size={"height": 16, "width": 16})
    data = prepare_data("pixels", str(folder / "images"), "text", 0, None, None, 16, "label")
    return LoadedModel("tiny-vit", "", model, processor, canonicalize(model)), data


def equal_split(canonical, folder):
    """An equal two-device s = 0 split saved as a calibrated folder (the searched row)."""
    shares = [DeviceShare(name=f"core{k}", heads=1, neurons=1) for k in range(2)]
    policy = build_policy(shape_of(canonical), compute_importance(canonical.body, "magnitude"), shares, sync=0)
    return save_student(folder, policy, build_student(canonical, policy))


def test_a_sequence_longer_than_the_model_is_refused_by_name(tmp_path):
    loaded, data = tiny_lm()  # 64 positions
    with pytest.raises(CoFormerError, match=r"evaluate.seq_len=128 but the model has 64 positions; set evaluate.seq_len <= 64"):
        run_evaluation(loaded, None, "default", data, tmp_path / "out", EvaluateConfig(), CalibrationConfig())
    assert not (tmp_path / "out").exists()


def test_another_models_calibrated_folder_is_refused_before_any_work(tiny_loaded, tmp_path):
    """Sub-models of the BERT embedder would be scored against the GPT-2 teacher: refused by name."""
    loaded, data = tiny_lm()
    calibrated = equal_split(tiny_loaded.canonical, tmp_path / "calibrated")
    with pytest.raises(CoFormerError, match=r"calibrated holds a decomposition of another model \(2 blocks, width 32, none head\) than base.model "
                       r"\(2 blocks, width 32, lm head\): calibrate this model first"):  # fmt: skip
        run_evaluation(loaded, calibrated, "default", data, tmp_path / "out", EvaluateConfig(seq_len=16), CalibrationConfig())
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
@pytest.mark.parametrize("family", ["gpt2", "vit"])
def test_lms_and_classifiers_are_scored_by_their_task(family, tmp_path):
    """Every method of an LM gets perplexity and KL, of a classifier top-1 agreement and KL; the
    baselines calibrate on the prepared texts or images; the processes reproduce the executor
    (the gateway and the pipeline included) and the report, CSVs and front speak the task's metrics."""
    loaded, data = tiny_lm() if family == "gpt2" else tiny_image_classifier()
    config = EvaluateConfig(
        methods=["full", "pipe-edge", "single-edge", "aggregate-edge", "coformer-gateway", "coformer"], devices=2, batch_sizes=[2],
        warmup=0, requests=1, links_mbit=[], quality_texts=8, seq_len=16, max_length=16, baseline_budget=1.0,
    )
    recipe = CalibrationConfig(steps_per_stage=1, final_steps=2, batch_size=4, max_length=16, checkpoint_every=0, group_size=2)
    out = tmp_path / "evaluate"
    profile = catalog_profile("core", "raspberry-pi-5", "ethernet-1g")
    calibrated = equal_split(loaded.canonical, tmp_path / "calibrated")
    metrics = run_evaluation(loaded, calibrated, "default", data, out, config, recipe, profile=profile)

    methods = metrics["methods"]
    assert metrics["task"] == ("lm" if family == "gpt2" else "classifier")
    assert methods["single-edge"]["budget"].startswith("1 x calibrate")  # calibrated on the prepared split
    for key, m in methods.items():
        if family == "gpt2":
            assert math.isfinite(m["perplexity"]) and m["perplexity"] > 1 and m["kl"] >= 0, (key, m)
            assert "agreement" not in m
        else:
            assert 0 <= m["agreement"] <= 1 and m["kl"] >= 0 and "perplexity" not in m, (key, m)
        assert not any(k.startswith("recall") for k in m)
    assert methods["full"]["kl"] == 0 < methods["single-edge"]["kl"]  # exact methods are the teacher, a pruned model is not
    if family == "gpt2":
        assert methods["full"]["perplexity"] == pytest.approx(metrics["teacher"]["perplexity"])
    rows = list(csv.DictReader(open(out / "methods.csv")))
    assert {r["method"] for r in rows} == set(methods) and all(float(r["runtime_error"]) < 1e-5 for r in rows)
    scores = ["kl", "perplexity", "cosine"] if family == "gpt2" else ["agreement", "kl", "cosine"]
    assert next(csv.reader(open(out / "front.csv"))) == ["method", "latency_ms", *scores]
    report = (out / "report.md").read_text()
    assert f"| {' | '.join(scores)} |" in report
    assert ("16 tokens per sequence" if family == "gpt2" else "16 px images (16 patches each)") in report


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["text", "image"])
def test_labelled_data_gives_a_classifier_accuracy_beside_the_teachers(kind, tmp_path):
    loaded, data = (tiny_text_classifier if kind == "text" else tiny_labelled_image_classifier)(tmp_path)
    config = EvaluateConfig(
        methods=["full", "single-edge", "aggregate-edge"], devices=2, batch_sizes=[2], warmup=0, requests=1, links_mbit=[],
        quality_texts=8, seq_len=16, max_length=16, baseline_budget=0,
    )
    metrics = run_evaluation(loaded, None, "default", data, tmp_path / "out", config, CalibrationConfig(), profile=catalog_profile("core", "raspberry-pi-5", "ethernet-1g"))
    assert metrics["scores"] == ["accuracy", "agreement", "kl", "cosine"]
    held = data.batches(loaded.processor, "evaluation", 64, 16, limit=8)
    labels = torch.cat([b["labels"] for b in held])
    predicted = torch.cat([loaded.model(**{k: v for k, v in b.items() if k != "labels"}).logits.argmax(-1) for b in held])
    assert metrics["teacher"]["accuracy"] == pytest.approx(float((predicted == labels).float().mean()))  # the original's own
    assert metrics["methods"]["full"]["accuracy"] == metrics["teacher"]["accuracy"]
    assert all(0 <= m["accuracy"] <= 1 for m in metrics["methods"].values())
    report = (tmp_path / "out" / "report.md").read_text()
    assert "| accuracy | agreement | kl | cosine |" in report and f"teacher's own: accuracy {metrics['teacher']['accuracy']:.4g}" in report


def test_labels_are_refused_where_they_would_be_scored_wrongly(tmp_path):
    from coformer.stages.inputs import check_labels

    loaded, data = tiny_text_classifier(tmp_path)
    head = loaded.canonical.head.config
    check_labels(data, head, "tiny")  # 3 classes, ids 0..2: fine
    with pytest.raises(CoFormerError, match=r"data.label_field is set but minilm has no classifier head; set data.label_field: null"):
        check_labels(data, head.model_copy(update={"projection": "none"}), "minilm")
    with pytest.raises(CoFormerError, match=r"the data has class id 2 but tiny has 2 classes"):
        check_labels(data, head.model_copy(update={"num_outputs": 2}), "tiny")


@pytest.mark.slow
def test_run_evaluation_writes_every_output(tiny_loaded, tmp_path):
    calibrated = equal_split(tiny_loaded.canonical, tmp_path / "calibrated")
    config = EvaluateConfig(
        methods=["full", "aggregate-edge", "coformer"], devices=2, batch_sizes=[2], warmup=0, requests=1, links_mbit=[],
        importance="magnitude", quality_texts=8, quality_pairs=8, seq_len=16, max_length=16,
    )
    texts = load_texts("builtin", "evaluation", limit=16)
    profile = catalog_profile("core", "raspberry-pi-5", "ethernet-1g")
    out = tmp_path / "evaluate"
    data = Prepared("tokens", {"calibration": texts, "evaluation": texts}, load_pairs("evaluation", limit=8))
    metrics = run_evaluation(tiny_loaded, calibrated, "default", data, out, config, CalibrationConfig(), profile=profile)
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
