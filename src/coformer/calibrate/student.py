"""The student ensemble in and out of folders: ``policy.json``, ``devices/<name>/``, ``aggregator/``.

The layout is the one ``coformer decompose`` writes, so a calibrated folder loads in the serving
path and the executor exactly like an uncalibrated one. Weights go through ``save_module``
(safetensors + JSON config), the project's one writer.
"""

from __future__ import annotations

from pathlib import Path

from coformer.adapters import Canonical
from coformer.decompose import Policy, decompose
from coformer.errors import ArtifactError
from coformer.executor import Ensemble
from coformer.modeling import load_aggregator, load_submodel, save_module

POLICY, DEVICES, AGGREGATOR = "policy.json", "devices", "aggregator"


def build_student(canonical: Canonical, policy: Policy) -> Ensemble:
    """Sub-models sliced from the original weights, and the aggregator, under the policy's sync."""
    submodels, aggregator = decompose(canonical, policy)
    return Ensemble(submodels, aggregator, policy.sync)


def load_student(folder: str | Path, canonical: Canonical | None = None) -> tuple[Policy, Ensemble]:
    """A decomposed (or calibrated) folder; with only ``policy.json`` there, slice ``canonical`` by it."""
    folder = Path(folder)
    policy = Policy.load(folder / POLICY)
    if (folder / DEVICES).is_dir():
        submodels = [load_submodel(folder / DEVICES / d.name) for d in policy.devices]
        return policy, Ensemble(submodels, load_aggregator(folder / AGGREGATOR), policy.sync)
    if canonical is None:
        raise ArtifactError(f"{folder} holds a policy but no {DEVICES}/; give the base model to slice it")
    return policy, build_student(canonical, policy)


def save_student(folder: str | Path, policy: Policy, student: Ensemble) -> Path:
    folder = Path(folder)
    policy.save(folder / POLICY)
    for sub in student.submodels:
        save_module(sub, folder / DEVICES / sub.config.name)
    save_module(student.aggregator, folder / AGGREGATOR)
    return folder


def restore_student(folder: str | Path, student: Ensemble) -> None:
    """Copy the weights saved in ``folder`` into ``student`` in place (resuming a run)."""
    _, saved = load_student(folder)
    if [m.config for m in saved.submodels] != [m.config for m in student.submodels]:
        raise ArtifactError(f"{folder} holds sub-models of another policy than this run's; use a fresh output folder")
    for sub, weights in zip(student.submodels, saved.submodels):
        sub.load_state_dict(weights.state_dict())
    student.aggregator.load_state_dict(saved.aggregator.state_dict())
