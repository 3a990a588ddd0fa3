"""Package a calibrated decomposition: the artifacts into the BentoML model store, then
``bentoml build`` of the edge-node and aggregator services, offline.

The model-store entry holds the calibrated folder (``policy.json``, ``devices/``, ``aggregator/``),
the tokenizer or image processor, and the deployment defaults; both bentos name it, so a built bento
serves exactly these weights. The build context is staged from ``bento/`` and the ``coformer``
package (the bento imports it from its own source), with ``lock_packages: false`` and ``uv`` taken
from this interpreter's bin folder (STACK.md: otherwise the build goes to the network).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

from coformer.errors import CoFormerError
from coformer.serving.artifacts import AGGREGATOR, DEPLOYMENT, DEVICES, POLICY, PROCESSOR, policy_and_configs
from coformer.serving.config import PackageConfig
from coformer.serving.local import BENTO_DIR, SERVICES

RESULT = "package.json"
RUNTIME_PACKAGES = ["torch", "safetensors", "transformers", "pydantic>=2.7", "httpx", "pyyaml", "numpy", "pillow"]


def package(calibrated_folder: str | Path, out_folder: str | Path, config: PackageConfig, model: str | None = None) -> dict:
    """Store and build; returns (and writes to ``out_folder/package.json``) the tags and sizes.

    ``model`` (``base.model``) provides the tokenizer when ``config.processor`` is None."""
    calibrated, out = Path(calibrated_folder).resolve(), Path(out_folder).resolve()  # bentoml build runs in the staging folder
    policy, configs = policy_and_configs(calibrated)  # fails early, naming what is missing
    if config.bentoml_home:
        os.environ["BENTOML_HOME"] = str(Path(config.bentoml_home).resolve())
    os.environ.setdefault("BENTOML_DO_NOT_TRACK", "True")
    out.mkdir(parents=True, exist_ok=True)
    model_tag, model_bytes = store_model(calibrated, config, model or None, policy, configs[0].embedding)
    result = {"model": {"tag": model_tag, "bytes": model_bytes}}
    with tempfile.TemporaryDirectory(prefix="coformer-bento-") as scratch:  # the build context is not an output
        staging = stage(Path(scratch))
        for kind, name in (("node", config.node_service), ("aggregator", config.aggregator_service)):
            bentofile = write_bentofile(staging, kind, name, model_tag)
            result[kind] = build(staging, bentofile)
    (out / RESULT).write_text(json.dumps(result, indent=1))
    return result


def store_model(calibrated: Path, config: PackageConfig, model: str | None, policy, embedding: str) -> tuple[str, int]:
    import bentoml

    from coformer.serving.frontend import load_processor

    labels = {"sync": str(policy.sync), "devices": str(len(policy.devices))}
    with bentoml.models.create(config.model_name, labels=labels, metadata={"devices": [d.name for d in policy.devices]}) as stored:
        target = Path(stored.path)
        shutil.copy2(calibrated / POLICY, target / POLICY)
        for entry in (DEVICES, AGGREGATOR):
            shutil.copytree(calibrated / entry, target / entry)
        processor = load_processor(config.processor or model, embedding)
        if processor is not None:
            processor.save_pretrained(target / PROCESSOR)
        config.deployment.save(target / DEPLOYMENT)
    return str(stored.tag), folder_bytes(Path(bentoml.models.get(stored.tag).path))


def stage(folder: Path) -> Path:
    """``folder`` (empty) as a build context: the service modules and the ``coformer`` package next to them."""
    import coformer

    for module in BENTO_DIR.glob("*.py"):
        shutil.copy2(module, folder / module.name)
    shutil.copytree(Path(coformer.__file__).parent, folder / "coformer", ignore=shutil.ignore_patterns("__pycache__"))
    return folder


def write_bentofile(staging: Path, kind: str, name: str, model_tag: str) -> Path:
    spec = {
        "service": SERVICES[kind],
        "name": name,
        "description": f"CoFormer {kind} service (see README, Serving)",
        "include": ["*.py", "coformer/**"],
        "models": [model_tag],
        "envs": [{"name": "COFORMER_ARTIFACTS", "value": model_tag}],
        "python": {"packages": RUNTIME_PACKAGES, "lock_packages": False},
    }
    path = staging / f"bentofile.{kind}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def build(staging: Path, bentofile: Path) -> dict:
    """``bentoml build`` with this interpreter's bin folder (``uv``) first on PATH."""
    import bentoml

    bin_dir = Path(sys.executable).parent
    env = os.environ | {"PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
    done = subprocess.run(
        [str(bin_dir / "bentoml"), "build", str(staging), "-f", str(bentofile), "-o", "tag"], env=env, capture_output=True, text=True, cwd=staging
    )
    tags = [line.split("__tag__:", 1)[1].strip() for line in done.stdout.splitlines() if "__tag__:" in line]
    if done.returncode != 0 or not tags:
        raise CoFormerError(f"bentoml build of {bentofile.name} failed (exit {done.returncode}):\n{(done.stdout + done.stderr)[-2000:]}")
    return {"tag": tags[-1], "bytes": folder_bytes(Path(bentoml.bentos.get(tags[-1]).path))}


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
