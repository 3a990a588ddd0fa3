"""MLflow for every stage, written once: a parent run per pipeline invocation, a child per stage.

DVC runs every stage as its own process, so the stages of one ``dvc repro`` / ``dvc exp run``
find their common parent run by the invoking ``dvc`` process (its pid and start time, tagged
``coformer.pipeline``): the first stage to run creates it, the others nest under it. A stage
run by hand (the ``coformer`` CLI) has no ``dvc`` ancestor and logs one run of its own. Runs are
tagged with the git commit, the DVC experiment name when there is one, and the parameters.

The model registry gets one named model per device role and one for the aggregator; every
calibration adds a version whose files are the safetensors, the config, the policy and the
metrics of that run.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from coformer.params import Params

PIPELINE_TAG = "coformer.pipeline"  # the dvc invocation a parent run belongs to
STAGE_TAG = "coformer.stage"


def dvc_invocation() -> str | None:
    """``<pid>-<start time>`` of the nearest ``dvc`` process above this one, else None."""
    import psutil

    for process in psutil.Process().parents():
        try:
            argv = process.cmdline()
        except psutil.Error:
            continue
        if any(Path(arg).name == "dvc" for arg in argv[:2]) or argv[1:3] == ["-m", "dvc"]:
            return f"{process.pid}-{process.create_time():.0f}"
    return None


def git_commit() -> str | None:
    try:
        done = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
    except OSError:
        return None
    return (done.stdout.strip() or None) if done.returncode == 0 else None


def run_tags() -> dict[str, str]:
    tags = {"mlflow.source.git.commit": git_commit(), "dvc.experiment": os.environ.get("DVC_EXP_NAME")}
    return {k: v for k, v in tags.items() if v}


def flat(params: Params, sections: tuple[str, ...]) -> dict[str, object]:
    """``section.key -> value`` of the given sections (lists and nulls as text, as MLflow keeps them)."""
    dumped = params.model_dump(by_alias=True)
    return {f"{s}.{k}": json.dumps(v) if isinstance(v, (list, dict)) or v is None else v for s in sections for k, v in dumped[s].items()}


def configure(params: Params):
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    import mlflow

    mlflow.set_tracking_uri(params.base.tracking_uri)
    return mlflow.set_experiment(params.base.experiment)


def parent_run(params: Params, experiment_id: str, invocation: str) -> str:
    """The run id of this pipeline invocation's parent run, created by the first stage to ask."""
    import mlflow

    client = mlflow.MlflowClient()
    found = client.search_runs([experiment_id], f"tags.`{PIPELINE_TAG}` = '{invocation}'", max_results=1)
    if found:
        return found[0].info.run_id
    name = os.environ.get("DVC_EXP_NAME") or "pipeline"
    run = client.create_run(experiment_id, run_name=name, tags={PIPELINE_TAG: invocation} | run_tags())
    for key, value in flat(params, tuple(Params.model_fields)).items():
        client.log_param(run.info.run_id, key, value)
    return run.info.run_id


@contextmanager
def stage_run(params: Params, stage: str) -> Iterator[object]:
    """The MLflow run a stage logs into (the active run inside the block): nested under the
    pipeline's parent when DVC runs the stage, standalone otherwise."""
    import mlflow

    experiment = configure(params)
    invocation = dvc_invocation()
    sections = ("base", stage) if stage in Params.model_fields else ("base",)
    tags = {STAGE_TAG: stage} | run_tags()
    if invocation is None:
        with mlflow.start_run(run_name=stage, tags=tags) as run:
            mlflow.log_params(flat(params, sections))
            yield run
        return
    with mlflow.start_run(run_id=parent_run(params, experiment.experiment_id, invocation)):
        with mlflow.start_run(run_name=stage, nested=True, tags=tags) as run:
            mlflow.log_params(flat(params, sections))
            yield run


def log_outputs(metrics: dict, files: list[Path], artifact_path: str | None = None, tags: dict[str, str] | None = None) -> None:
    """A stage's numeric metrics, output files and tags into the active run."""
    import mlflow

    if tags:
        mlflow.set_tags(tags)
    mlflow.log_metrics({mlflow_key(k): float(v) for k, v in metrics.items() if is_number(v)})
    for path in files:
        if path.is_dir():
            mlflow.log_artifacts(str(path), artifact_path=f"{artifact_path}/{path.name}" if artifact_path else path.name)
        elif path.is_file():
            mlflow.log_artifact(str(path), artifact_path=artifact_path)


def mlflow_key(name: str) -> str:
    """Our metric names (``recall@1``) as MLflow accepts them (``recall_at_1``)."""
    return name.replace("@", "_at_")


def is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value == value


def register(params: Params, roles: dict[str, list[Path]], tags: dict[str, str]) -> dict[str, str]:
    """Log every role's files (folders by their contents) to the active run and add them as a new
    version of the registered model ``<experiment>-<role>``; returns role -> version."""
    import mlflow
    from mlflow.exceptions import MlflowException

    client = mlflow.MlflowClient()
    run = mlflow.active_run()
    versions = {}
    for role, paths in roles.items():
        name, where = f"{params.base.experiment}-{role}", f"registry/{role}"
        for path in paths:
            (mlflow.log_artifacts if path.is_dir() else mlflow.log_artifact)(str(path), artifact_path=where)
        try:
            client.create_registered_model(name, description=f"CoFormer {role}: safetensors + config.json, with the policy and metrics")
        except MlflowException as e:
            if e.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
        version = client.create_model_version(name, source=f"{run.info.artifact_uri}/{where}", run_id=run.info.run_id, tags=tags)
        versions[role] = version.version
    return versions
