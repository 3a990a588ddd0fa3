"""What every stage script shares: its params, an MLflow run, and errors as one line.

Stages run as ``python -m pipelines.<stage>`` from the repository root (DVC's working
directory): as modules, so that ``pipelines/profile.py`` cannot shadow the standard library's
``profile`` the way running it as a script (its folder first on ``sys.path``) would.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

import yaml

from coformer.errors import CoFormerError

PARAMS = Path("params.yaml")


def load_params(stage: str) -> tuple[dict, dict, dict]:
    """(base, data, this stage's section) of params.yaml."""
    params = yaml.safe_load(PARAMS.read_text())
    return params["base"], params.get("data") or {}, params.get(stage) or {}


@contextmanager
def mlflow_run(base: dict, run_name: str):
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    import mlflow

    mlflow.set_tracking_uri(base["tracking_uri"])
    mlflow.set_experiment(base["experiment"])
    with mlflow.start_run(run_name=run_name) as run:
        yield run


def run_stage(main: Callable[[], None]) -> None:
    try:
        main()
    except CoFormerError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
