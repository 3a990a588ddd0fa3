"""The data package: embedded docstring corpus, datasets sources, tokenisation and image batches."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import tiny_bert, tiny_gpt2, tiny_vit

from coformer.adapters import canonicalize
from coformer.data import (
    SPLITS,
    calibration_batches,
    image_batches,
    load_images,
    load_pairs,
    load_texts,
    synthetic_images,
    text_batches,
    tokenize,
)
from coformer.data.corpus import split_docstring
from coformer.data.prepared import Prepared, prepare_data
from coformer.data.sources import load_labelled_texts
from coformer.errors import DataError

ROWS = [f"sentence number {i} about topic {i % 3}" for i in range(10)]


@pytest.fixture(scope="module")
def pairs():
    return {split: load_pairs(split) for split in SPLITS}


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    from coformer.loading import resolve

    return AutoTokenizer.from_pretrained(resolve("all-MiniLM-L6-v2"))


@pytest.fixture
def image_processor():
    from transformers import ViTImageProcessor

    return ViTImageProcessor(size={"height": 16, "width": 16})


# --- embedded corpus ---------------------------------------------------------------------------


def test_corpus_is_large_and_deduplicated(pairs):
    everything = pairs["calibration"] + pairs["evaluation"]
    assert len(everything) >= 1500
    assert len({p.query.lower() for p in everything}) == len(everything)
    assert len({" ".join(p.document.split()) for p in everything}) == len(everything)
    assert 0.1 < len(pairs["evaluation"]) / len(everything) < 0.3  # roughly 80/20
    for p in everything:
        assert "\n" not in p.query and len(p.query) >= 20 and len(p.document) >= 80


def test_splits_are_disjoint_by_top_level_module(pairs):
    tops = {split: {p.module.split(".")[0] for p in pairs[split]} for split in SPLITS}
    assert tops["calibration"] and tops["evaluation"]
    assert not tops["calibration"] & tops["evaluation"]


def test_corpus_is_identical_in_a_fresh_process(pairs):
    """Another process with another hash seed builds the very same pairs in the same order."""
    script = (
        "import hashlib, json; from coformer.data import load_pairs; "
        "print(hashlib.sha256(json.dumps([[p.module, p.query, p.document] "
        "for s in ('calibration', 'evaluation') for p in load_pairs(s)]).encode()).hexdigest())"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True)
    here = json.dumps([[p.module, p.query, p.document] for s in SPLITS for p in pairs[s]])
    assert out.stdout.strip() == hashlib.sha256(here.encode()).hexdigest()


def test_docstring_splits_into_summary_and_body():
    body = "The value is computed twice and the\nlarger result wins, which is rarely what you want."
    doc = "Return the frobnicated value of x.\n\n" + body
    assert split_docstring(doc) == ("Return the frobnicated value of x.", body)
    assert split_docstring("Return the frobnicated value of x.") is None  # no body
    assert split_docstring("Frobnicate.\n\n" + "word " * 30) is None  # summary too short


def test_load_pairs_limit_and_bad_split(pairs):
    assert load_pairs("evaluation", limit=7) == pairs["evaluation"][:7]
    with pytest.raises(DataError, match="calibration, evaluation"):
        load_pairs("train")


def test_builtin_texts_follow_the_split_and_seed(pairs):
    calibration = load_texts("builtin", "calibration")
    evaluation = set(load_texts("builtin", "evaluation"))
    assert {p.query for p in pairs["calibration"]} <= set(calibration)
    assert not {p.query for p in pairs["evaluation"]} & set(calibration)
    assert {p.document for p in pairs["evaluation"]} <= evaluation
    assert len(calibration) > 2 * len(pairs["calibration"])  # pydoc reference topics are in too
    assert load_texts(limit=20, seed=1) == load_texts(limit=20, seed=1) != load_texts(limit=20, seed=2)


# --- datasets sources --------------------------------------------------------------------------


def write(path, kind, rows):
    if kind == "jsonl":
        path.write_text("".join(json.dumps({"id": i, "text": r}) + "\n" for i, r in enumerate(rows)))
    elif kind == "csv":
        path.write_text("id,text\n" + "".join(f"{i},{r}\n" for i, r in enumerate(rows)))
    else:
        path.write_text("\n\n".join(rows) + "\n")  # blank lines between texts are dropped


@pytest.mark.parametrize("kind", ["jsonl", "csv", "txt"])
def test_local_file_loads_and_splits_80_20(tmp_path, kind):
    write(tmp_path / f"data.{kind}", kind, ROWS)
    calibration = load_texts(str(tmp_path / f"data.{kind}"), "calibration", seed=3)
    evaluation = load_texts(str(tmp_path / f"data.{kind}"), "evaluation", seed=3)
    assert (len(calibration), len(evaluation)) == (8, 2)
    assert sorted(calibration + evaluation) == sorted(ROWS)
    assert load_texts(str(tmp_path / f"data.{kind}"), "calibration", seed=3, limit=3) == calibration[:3]


def test_folder_with_its_own_splits_keeps_them(tmp_path):
    write(tmp_path / "train.jsonl", "jsonl", ROWS[:6])
    write(tmp_path / "test.jsonl", "jsonl", ROWS[6:])
    assert sorted(load_texts(str(tmp_path), "calibration")) == sorted(ROWS[:6])
    assert sorted(load_texts(str(tmp_path), "evaluation")) == sorted(ROWS[6:])


def test_missing_text_field_lists_the_columns(tmp_path):
    write(tmp_path / "data.jsonl", "jsonl", ROWS)
    with pytest.raises(DataError, match=r"no text field 'body'; available columns: id, text"):
        load_texts(str(tmp_path / "data.jsonl"), text_field="body")
    with pytest.raises(DataError, match="'id' holds .*int64.*not text"):
        load_texts(str(tmp_path / "data.jsonl"), text_field="id")


def test_bad_sources_give_data_errors(tmp_path):
    with pytest.raises(DataError, match="calibration, evaluation"):
        load_texts("builtin", split="validation")
    with pytest.raises(DataError, match="does not exist"):
        load_texts(str(tmp_path / "missing.jsonl"))
    (tmp_path / "notes.md").write_text("# not data\n")
    with pytest.raises(DataError, match="no data file"):
        load_texts(str(tmp_path))
    with pytest.raises(DataError, match="hub dataset 'no-such-org/no-such-dataset'"):
        load_texts("no-such-org/no-such-dataset")  # HF_HUB_OFFLINE=1: fails fast


# --- tokenisation ------------------------------------------------------------------------------


def test_tokenize_pads_truncates_and_masks(tokenizer):
    texts = ["Short one.", "A much longer sentence that needs quite a few more word pieces to encode."]
    batch = tokenize(tokenizer, texts, max_length=64)
    assert set(batch) == {"input_ids", "attention_mask", "token_type_ids"}
    ids, mask = batch["input_ids"], batch["attention_mask"]  # (2, T)
    lengths = [len(tokenizer(t)["input_ids"]) for t in texts]
    assert ids.shape == (2, max(lengths))
    assert mask.sum(dim=1).tolist() == lengths
    assert (ids[0, lengths[0] :] == tokenizer.pad_token_id).all()
    assert tokenize(tokenizer, texts, max_length=8)["input_ids"].shape == (2, 8)


def test_text_batches_keep_order(tokenizer):
    texts = load_texts(limit=10)
    batches = text_batches(tokenizer, texts, batch_size=4, max_length=32)
    assert [b["input_ids"].shape[0] for b in batches] == [4, 4, 2]
    torch.testing.assert_close(batches[1]["input_ids"], tokenize(tokenizer, texts[4:8], 32)["input_ids"])
    with pytest.raises(DataError, match="batch_size"):
        text_batches(tokenizer, texts, batch_size=0)


def test_tokenizer_without_pad_token_pads_with_end_of_text(tokenizer):
    from copy import deepcopy

    no_pad = deepcopy(tokenizer)
    no_pad.pad_token = None
    with pytest.raises(DataError, match="pad_token"):
        tokenize(no_pad, ["a", "a b c"])
    no_pad.eos_token = "[SEP]"
    batch = tokenize(no_pad, ["a", "a b c"])
    assert batch["input_ids"][0, -1].item() == no_pad.convert_tokens_to_ids("[SEP]")


def test_calibration_batches_for_text_models(tokenizer):
    bert = canonicalize(tiny_bert()).config
    batches = calibration_batches(tokenizer, bert, n=10, batch_size=4, max_length=96)
    assert [b["input_ids"].shape[0] for b in batches] == [4, 4, 2]
    assert max(b["input_ids"].shape[1] for b in batches) == 96  # long docstrings hit the cap
    gpt2 = canonicalize(tiny_gpt2()).config  # 64 positions
    assert max(b["input_ids"].shape[1] for b in calibration_batches(tokenizer, gpt2, n=10, max_length=96)) <= 64


# --- images ------------------------------------------------------------------------------------


def test_synthetic_images_are_deterministic_and_structured():
    a, b, c = synthetic_images(3, 32, seed=0), synthetic_images(3, 32, seed=0), synthetic_images(3, 32, seed=1)
    assert all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(a, b))
    assert not np.array_equal(np.asarray(a[0]), np.asarray(c[0]))
    pixels = np.asarray(a[0])  # (32, 32, 3)
    assert pixels.shape == (32, 32, 3) and len(np.unique(pixels.reshape(-1, 3), axis=0)) > 10


def test_image_batches_through_vit_processor(image_processor):
    batches = image_batches(image_processor, synthetic_images(5, 24), batch_size=2)
    assert [tuple(b["pixel_values"].shape) for b in batches] == [(2, 3, 16, 16), (2, 3, 16, 16), (1, 3, 16, 16)]
    vit = canonicalize(tiny_vit()).config
    batches = calibration_batches(image_processor, vit, n=3, batch_size=2)
    assert [tuple(b["pixel_values"].shape) for b in batches] == [(2, 3, 16, 16), (1, 3, 16, 16)]


def test_image_folder_loads_and_splits(tmp_path):
    for i, image in enumerate(synthetic_images(10, 8, seed=4)):
        image.save(tmp_path / f"img{i}.png")
    calibration = load_images(str(tmp_path), "calibration")
    evaluation = load_images(str(tmp_path), "evaluation", limit=1)
    assert (len(calibration), len(evaluation)) == (8, 1)
    assert calibration[0].size == (8, 8)
    synthetic = {split: np.asarray(load_images("synthetic", split, limit=1, size=8)[0]) for split in SPLITS}
    assert not np.array_equal(synthetic["calibration"], synthetic["evaluation"])


# --- labels (classifiers: accuracy and the task loss) ---------------------------------------------


LABELLED = [f"number {i} " + "word " * ((7 * i) % 10) for i in range(10)]  # lengths not in the order of i


def label_of(text: str) -> int:
    """A label computable from the text, so alignment can be checked after any shuffle or sort."""
    return int(text.split()[1]) % 3


def write_labelled(path, rows, label=label_of):
    path.write_text("".join(json.dumps({"text": r, "label": label(r)}) + "\n" for r in rows))


def test_labels_stay_with_their_texts_through_split_shuffle_and_files(tmp_path, tokenizer):
    write_labelled(tmp_path / "data.jsonl", LABELLED)
    prepared = prepare_data("tokens", str(tmp_path / "data.jsonl"), "text", 3, None, 1, 224, "label")
    for split in SPLITS:
        assert [label_of(t) for t in prepared.splits[split]] == prepared.labels[split]
    assert len(set(prepared.labels["calibration"])) == 3
    again = Prepared.load(prepared.save(tmp_path / "prepared")[0].parent)
    assert again.labels == prepared.labels and again.splits == prepared.splits
    batches = again.batches(tokenizer, "calibration", 3, 16, by_length=True)  # sorted by length: the labels follow
    texts = sorted(again.splits["calibration"], key=len)
    assert texts != again.splits["calibration"]
    assert torch.cat([b["labels"] for b in batches]).tolist() == [label_of(t) for t in texts]


def test_image_folder_classes_are_labels(tmp_path):
    """imagefolder's class sub-folders are its label column; solid red images are class 0, blue 1."""
    from PIL import Image

    for k, colour in enumerate([(255, 0, 0), (0, 0, 255)]):
        (tmp_path / f"c{k}").mkdir()
        for i in range(5):
            Image.new("RGB", (8, 8), colour).save(tmp_path / f"c{k}" / f"{i}.png")
    prepared = prepare_data("pixels", str(tmp_path), "text", 0, None, None, 8, "label")
    for split in SPLITS:
        assert [int(a[0, 0, 2] > 0) for a in prepared.splits[split]] == prepared.labels[split]
    again = Prepared.load(prepared.save(tmp_path / "prepared")[0].parent)
    assert again.labels == prepared.labels and all(np.array_equal(a, b) for a, b in zip(again.splits["evaluation"], prepared.splits["evaluation"]))


def test_bad_labels_are_refused_by_name(tmp_path):
    write_labelled(tmp_path / "data.jsonl", LABELLED)
    with pytest.raises(DataError, match="builtin corpus has no labels"):
        prepare_data("tokens", "builtin", "text", 0, 4, 4, 224, "label")
    with pytest.raises(DataError, match=r"no label field 'class'; available columns: text, label"):
        prepare_data("tokens", str(tmp_path / "data.jsonl"), "text", 0, None, None, 224, "class")
    with pytest.raises(DataError, match="'text' holds .*not class ids"):
        load_labelled_texts(str(tmp_path / "data.jsonl"), "calibration", None, "text", "text")
    write_labelled(tmp_path / "unlabelled.jsonl", LABELLED, label=lambda r: -1)
    with pytest.raises(DataError, match=r"split has unlabelled rows \(label = -1"):
        prepare_data("tokens", str(tmp_path / "unlabelled.jsonl"), "text", 0, None, None, 224, "label")
