"""Sub-models and aggregators on disk: ``model.safetensors`` + ``config.json``, never pickle."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from pydantic import ValidationError
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from coformer.errors import ArtifactError
from coformer.modeling.aggregator import Aggregator, AggregatorConfig
from coformer.modeling.submodel import SubModel, SubModelConfig

WEIGHTS, CONFIG = "model.safetensors", "config.json"
CONFIGS = {"submodel": SubModelConfig, "aggregator": AggregatorConfig}


def save_module(module: SubModel | Aggregator, directory: str | Path) -> Path:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    kind = "submodel" if isinstance(module, SubModel) else "aggregator"
    state = {k: v.detach().contiguous() for k, v in module.state_dict().items()}
    save_file(state, directory / WEIGHTS, metadata={"kind": kind})
    payload = {"kind": kind, "config": module.config.model_dump()}
    (directory / CONFIG).write_text(json.dumps(payload, indent=1))
    return directory


def read_config(directory: str | Path, expected: str | None = None) -> tuple[str, SubModelConfig | AggregatorConfig]:
    """(kind, config) of an artifact folder without its weights; ``expected`` ("submodel" /
    "aggregator") guards against mixed-up folders."""
    directory = Path(directory)
    try:
        payload = json.loads((directory / CONFIG).read_text())
        kind = payload["kind"]
        config = CONFIGS[kind].model_validate(payload["config"])
    except FileNotFoundError as e:
        raise ArtifactError(f"{directory} has no {CONFIG}; point to a folder written by `coformer decompose`") from e
    except (json.JSONDecodeError, KeyError, ValidationError) as e:
        raise ArtifactError(f"{directory / CONFIG} is corrupt ({e}); re-export the artifact") from e
    if expected and kind != expected:
        raise ArtifactError(f"{directory} holds a {kind}, expected a {expected}")
    return kind, config


def load_module(directory: str | Path, expected: str | None = None) -> SubModel | Aggregator:
    """Load either kind (see ``read_config``)."""
    directory = Path(directory)
    kind, config = read_config(directory, expected)
    try:
        state = load_file(directory / WEIGHTS)
    except (FileNotFoundError, SafetensorError, OSError) as e:
        raise ArtifactError(f"cannot read {directory / WEIGHTS} ({e}); re-export the artifact") from e
    if kind == "submodel":
        return SubModel.from_state_dict(config, state)
    module = Aggregator(config)
    try:
        module.load_state_dict(state)
    except RuntimeError as e:
        raise ArtifactError(f"{directory / WEIGHTS} does not match its config ({e}); re-export the artifact") from e
    return module


def load_submodel(directory: str | Path) -> SubModel:
    return load_module(directory, "submodel")


def load_aggregator(directory: str | Path) -> Aggregator:
    return load_module(directory, "aggregator")


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    """Bit-exact equality of two modules' state (names, shapes, dtypes and values)."""
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
