"""The pipeline as a new user meets it: a fresh clone, README's commands verbatim in a plain shell.

The module's project is a ``git clone`` of this repository in which README's set-up command
builds a new virtual environment and README's quick run (``dvc exp run -S ...`` with tiny budgets)
runs every stage. The tests then look at what a user looks at: the outputs and metrics, DVC's view
of what is stale, MLflow's runs and registered models, and what a broken params.yaml does.
Nothing here puts the virtual environment on ``PATH``: the commands do what README says.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import ROOT

pytestmark = pytest.mark.slow
STAGES = ("prepare", "profile", "search", "calibrate", "evaluate", "package")


def readme_command(marker: str) -> str:
    """The bash block that follows ``<!-- marker -->`` in README.md, as a user would paste it."""
    found = re.search(rf"<!-- {marker} -->\s*```bash\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    assert found, f"README.md has no <!-- {marker} --> bash block"
    return found.group(1).strip()


def plain_environment() -> dict[str, str]:
    """This environment without any virtual environment: what a new shell has."""
    venv_bins = {str(Path(sys.prefix) / "bin"), str(Path(sys.executable).parent)}
    path = [p for p in os.environ["PATH"].split(os.pathsep) if p not in venv_bins and ".venv" not in p]
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONHOME", "PYTHONPATH")}
    return env | {"PATH": os.pathsep.join(path)}


def shell(command: str, cwd: Path, timeout: int = 900, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run(["bash", "-c", command], cwd=cwd, env=plain_environment(), capture_output=True, text=True, timeout=timeout)
    if check:
        assert done.returncode == 0, f"{command}\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
    return done


def dvc(project: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return shell(". .venv/bin/activate && dvc " + " ".join(args), project, check=check)


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("clone") / "coformer-ops"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(root)], check=True)
    for key, value in (("user.email", "ci@example.com"), ("user.name", "ci")):
        subprocess.run(["git", "config", key, value], cwd=root, check=True)
    shell(readme_command("setup"), root, timeout=1200)
    shell(readme_command("quick"), root, timeout=1800)
    return root


def test_quick_run_writes_every_stage_output_and_metric(project):
    for path in (
        "outputs/prepare/data/calibration.jsonl",
        "outputs/profile/fleet.json",
        "outputs/search/policy.json",
        "outputs/calibrate/aggregator/model.safetensors",
        "outputs/calibrate/curve.csv",
        "outputs/evaluate/report.md",
        "outputs/evaluate/front.png",
        "outputs/package/package.json",
    ):
        assert (project / path).is_file(), path
    metrics = json.dumps(json.loads(dvc(project, "metrics", "show", "--json").stdout))
    for key in ("calibration_items", "core_matmul_gflops", "chosen_latency_ms", "after_cosine"):
        assert key in metrics, key


def test_mlflow_holds_one_parent_a_child_per_stage_and_registered_versions(project):
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{project / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("coformer")
    runs = client.search_runs([experiment.experiment_id], max_results=100)
    parents = [r for r in runs if "coformer.pipeline" in r.data.tags and r.data.tags.get("dvc.experiment") == "quick"]
    assert len(parents) == 1, [r.info.run_name for r in parents]
    parent = parents[0]
    assert parent.info.run_name == "quick"
    assert parent.data.tags["mlflow.source.git.commit"] == shell("git rev-parse HEAD", project).stdout.strip()
    assert parent.data.params["search.trials"] == "3"
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert sorted(r.data.tags["coformer.stage"] for r in children) == sorted(STAGES)
    policy = json.loads((project / "outputs/calibrate/policy.json").read_text())
    for role in ["aggregator", *(f"device-{d['name']}" for d in policy["devices"])]:
        versions = client.search_model_versions(f"name = 'coformer-{role}'")
        assert versions, role
        files = {a.path.rsplit("/", 1)[-1] for a in client.list_artifacts(versions[0].run_id, f"registry/{role}")}
        assert {"model.safetensors", "config.json", "policy.json", "metrics.json"} <= files, (role, files)


def test_nothing_changed_runs_nothing(project):
    assert "changed" not in dvc(project, "status").stdout
    assert "Running stage" not in dvc(project, "repro").stdout


def test_cost_model_code_makes_search_and_later_stale(project):
    cost = project / "src/coformer/fleet/cost.py"
    original = cost.read_text()
    cost.write_text(original + "\n# a change to the cost model\n")
    try:
        status = dvc(project, "status").stdout
    finally:
        cost.write_text(original)
    stale = {stage for stage in STAGES if re.search(rf"^{stage}:", status, re.M)}
    assert stale == set(STAGES), status  # every stage runs the fleet code (params.py validates base.fleet with it)


def test_a_calibrate_parameter_reruns_only_calibrate_and_after(project):
    out = dvc(project, "exp", "run", "-S", "calibrate.lr=1e-4").stdout
    ran = set(re.findall(r"Running stage '(\w+)'", out))
    assert ran == {"calibrate", "evaluate", "package"}, out
    assert yaml.safe_load((project / "params.yaml").read_text())["calibrate"]["lr"] == 1e-4


@pytest.mark.parametrize(
    "section, key, value, stage, names",
    [
        # latest stage first: DVC deletes a failing stage's outputs (its uncached metrics for good), which
        # leaves that stage, not an earlier one, to run first in the cases after it
        ("calibrate", "lrr", 1e-3, "calibrate", ["calibrate.lrr is not a parameter"]),
        ("calibrate", "final_steps", -5, "calibrate", ["calibrate.final_steps", "greater than or equal to 0"]),
        ("search", "trials", "many", "search", ["search.trials", "integer"]),
        ("base", "fleet", "moonbase", "profile", ["base.fleet 'moonbase'"]),
    ],
)
def test_a_broken_params_file_stops_the_first_stage_that_reads_it(project, section, key, value, stage, names):
    params = project / "params.yaml"
    original = params.read_text()
    earlier = [project / "outputs" / s for s in STAGES[: STAGES.index(stage)]]
    before = {p: p.stat().st_mtime_ns for folder in earlier for p in folder.rglob("*") if p.is_file()}
    broken = yaml.safe_load(original)
    broken[section][key] = value
    params.write_text(yaml.safe_dump(broken, sort_keys=False))
    try:
        done = dvc(project, "repro", check=False)
    finally:
        params.write_text(original)
    assert done.returncode != 0
    assert f"Running stage '{stage}'" in done.stdout, done.stdout
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and all(n in errors[0] for n in names), done.stderr
    assert "Traceback" not in done.stderr
    assert before and {p: p.stat().st_mtime_ns for p in before} == before  # earlier stages' outputs untouched
