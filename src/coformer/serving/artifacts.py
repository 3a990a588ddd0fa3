"""Where a service finds its weights: a calibrated folder on disk, or the same folder stored in the
BentoML model store by ``coformer.serving.packaging`` (what a built bento carries)."""

from __future__ import annotations

import json
from pathlib import Path

from coformer.decompose.policy import Policy
from coformer.errors import ArtifactError
from coformer.modeling import SubModelConfig

# The layout `coformer decompose` and `coformer.calibrate.student.save_student` write (importing the
# latter would load Lightning into every node); tests save with save_student and serve the result.
POLICY, DEVICES, AGGREGATOR = "policy.json", "devices", "aggregator"
PROCESSOR, DEPLOYMENT = "processor", "deployment.yaml"  # extra entries a packaged model carries


def resolve(spec: str) -> Path:
    """A folder holding ``policy.json``, or a BentoML model tag (``coformer-student:latest``)."""
    folder = Path(spec)
    if not (folder / POLICY).is_file():
        import bentoml

        try:
            folder = Path(bentoml.models.get(spec).path)
        except Exception as e:  # BentoML raises NotFound or a bad-tag error
            raise ArtifactError(f"artifacts {spec!r} are neither a folder with {POLICY} nor a BentoML model ({e}); run `coformer decompose` or the package stage") from None
    return folder


def node_folder(root: Path, name: str) -> Path:
    folder = root / DEVICES / name
    if not folder.is_dir():
        names = sorted(p.name for p in (root / DEVICES).iterdir()) if (root / DEVICES).is_dir() else []
        raise ArtifactError(f"no sub-model {name!r} under {root / DEVICES}; devices there: {names}")
    return folder


def aggregator_folder(root: Path) -> Path:
    return root / AGGREGATOR


def policy_and_configs(root: Path) -> tuple[Policy, list[SubModelConfig]]:
    """The policy and every device's sub-model config (JSON only: the aggregator holds no node weights)."""
    policy = Policy.load(root / POLICY)
    configs = [SubModelConfig.model_validate(json.loads((node_folder(root, d.name) / "config.json").read_text())["config"]) for d in policy.devices]
    return policy, configs
