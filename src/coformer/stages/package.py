"""Stage ``package``: the calibrated decomposition as BentoML bentos (``coformer.serving.packaging``)."""

from __future__ import annotations

from pathlib import Path

from coformer.params import Params
from coformer.serving.packaging import RESULT, package
from coformer.tracking import log_outputs, stage_run


def run(params: Params, calibrated: Path, out: Path) -> dict:
    """Store ``calibrated`` in the BentoML model store and build the node and aggregator bentos
    offline; ``out/package.json`` (also in the MLflow run) holds their tags and sizes."""
    with stage_run(params, "package") as run_:
        result = package(calibrated, out, params.package, params.base.model)
        log_outputs(
            {f"{kind}_bytes": entry["bytes"] for kind, entry in result.items()},
            [out / RESULT],
            tags={f"bento.{kind}": entry["tag"] for kind, entry in result.items()},
        )
    print(f"package: {', '.join(entry['tag'] for entry in result.values())} (MLflow run {run_.info.run_id})", flush=True)
    return result
