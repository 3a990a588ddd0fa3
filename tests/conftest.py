"""Shared fixtures: tiny random models of every family and the bundled MiniLM, all offline."""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]  # the repository

for key, value in {
    "HF_HUB_OFFLINE": "1",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "TRANSFORMERS_VERBOSITY": "error",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_AIR_NEW_OUTPUT": "0",
    "DVC_NO_ANALYTICS": "1",
    "BENTOML_DO_NOT_TRACK": "True",
}.items():
    os.environ.setdefault(key, value)
os.environ.pop("COLUMNS", None)  # pytest-xdist workers get COLUMNS=80, which would fix the width of consoles made at import

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)

SENTENCES = [
    "Return the absolute value of a number.",
    "The argument may be an integer, a floating point number, or an object implementing __abs__().",
    "Open file and return a corresponding file object.",
    "If the file cannot be opened, an OSError is raised.",
    "Create a new dictionary.",
]


def tiny_gpt2(lm_head: bool = True, layers: int = 3):
    from transformers import GPT2Config, GPT2LMHeadModel, GPT2Model

    torch.manual_seed(0)
    config = GPT2Config(n_embd=32, n_layer=layers, n_head=4, vocab_size=100, n_positions=64, bos_token_id=0, eos_token_id=0)
    return (GPT2LMHeadModel if lm_head else GPT2Model)(config).eval()


def tiny_bert(classifier: bool = False):
    from transformers import BertConfig, BertForSequenceClassification, BertModel

    torch.manual_seed(0)
    config = BertConfig(
        hidden_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=64, vocab_size=100, num_labels=3
    )
    return (BertForSequenceClassification if classifier else BertModel)(config).eval()


def tiny_vit(classifier: bool = False):
    from transformers import ViTConfig, ViTForImageClassification, ViTModel

    torch.manual_seed(0)
    config = ViTConfig(
        hidden_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=64, image_size=16, patch_size=4, num_labels=3
    )
    return (ViTForImageClassification if classifier else ViTModel)(config).eval()


def token_inputs(batch: int = 3, length: int = 9, vocab: int = 100, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random ids with ragged right padding (row r keeps length - r tokens)."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab, (batch, length), generator=g)
    mask = torch.ones(batch, length, dtype=torch.long)
    for r in range(batch):
        mask[r, length - r :] = 0
    return {"input_ids": ids, "attention_mask": mask}


def image_inputs(batch: int = 2, size: int = 16, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"pixel_values": torch.randn(batch, 3, size, size, generator=g)}


@pytest.fixture(scope="session")
def minilm():
    from coformer.loading import load_model

    return load_model()


@pytest.fixture(scope="session")
def minilm_inputs(minilm):
    return dict(minilm.processor(SENTENCES, padding=True, return_tensors="pt"))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The fresh-clone pipeline test first: it is the longest file (a second install plus every
    stage), so under ``pytest -n 2 --dist loadfile`` one worker starts it while the other runs the rest."""
    items.sort(key=lambda item: item.path.name != "test_pipeline.py")
