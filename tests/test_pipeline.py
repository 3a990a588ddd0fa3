"""The DVC pipeline end to end, as a user runs it: `dvc repro` in a fresh repository with small
params, then `dvc exp run -S` changing one parameter, and the metrics DVC reports."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SMALL = {
    "profile": {"repeats": 2, "whole_machine": False},
    "search": {"trials": 3, "texts": 8, "max_length": 16},
    "calibrate": {"warm_start_texts": 16, "steps_per_stage": 2, "final_steps": 3, "group_size": 3, "batch_size": 4, "max_length": 16, "checkpoint_every": 0},
    "data": {"max_length": 16, "eval_limit": 24},
}


def dvc(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = os.environ | {"DVC_NO_ANALYTICS": "1", "MLFLOW_DISABLE_TELEMETRY": "true", "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    result = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, f"dvc {' '.join(args)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    repo = tmp_path_factory.mktemp("project")
    shutil.copy(ROOT / "dvc.yaml", repo)
    shutil.copytree(ROOT / "pipelines", repo / "pipelines", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "src", repo / "src", ignore=shutil.ignore_patterns("__pycache__"))
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    for section, values in SMALL.items():
        params[section] |= values
    params["base"]["tracking_uri"] = f"sqlite:///{repo}/mlflow.db"
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (repo / ".gitignore").write_text("mlflow.db\nmlruns/\n")
    for cmd in (["init", "-q"], ["config", "user.email", "ci@example.com"], ["config", "user.name", "ci"]):
        subprocess.run(["git", *cmd], cwd=repo, check=True)
    dvc("init", "-q", cwd=repo)
    subprocess.run(["git", "add", "-A"], cwd=repo, check=True)
    subprocess.run(["git", "commit", "-qm", "project"], cwd=repo, check=True)
    return repo


@pytest.mark.slow
def test_dvc_repro_runs_every_stage_and_reports_metrics(project):
    dvc("repro", cwd=project)
    for path in (
        "outputs/profile/fleet.json",
        "outputs/search/policy.json",
        "outputs/search/trials.csv",
        "outputs/calibrate/policy.json",
        "outputs/calibrate/aggregator/model.safetensors",
        "outputs/calibrate/curve.csv",
    ):
        assert (project / path).is_file(), path
    metrics = json.loads(dvc("metrics", "show", "--json", cwd=project).stdout)
    flat = json.dumps(metrics)
    for key in ("core_matmul_gflops", "chosen_latency_ms", "after_cosine"):
        assert key in flat, key
    assert "changed" not in dvc("status", cwd=project).stdout  # everything up to date


@pytest.mark.slow
def test_dvc_exp_run_changes_parameters(project):
    """More trials continue the search; a changed calibration parameter starts calibration over
    (its persisted stages belong to the old parameters) instead of failing on them."""
    dvc("exp", "run", "-S", "search.trials=4", "-S", "calibrate.lr=1e-4", cwd=project)
    shown = dvc("exp", "show", "--json", cwd=project).stdout
    assert '"trials": 4' in shown.replace(" ", "").replace('"trials":4', '"trials": 4')
    trials = (project / "outputs/search/trials.csv").read_text().strip().splitlines()
    assert len(trials) == 1 + 4  # header + the stored 3 trials continued to 4
    state = json.loads((project / "outputs/calibrate/stages/state.json").read_text())
    assert state["fingerprint"]["calibrate"]["lr"] == 1e-4 and len(state["completed"]) == len(state["fingerprint"]["stages"])
