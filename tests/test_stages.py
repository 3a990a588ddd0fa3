"""One assembly per stage: the ``coformer`` CLI and the thin DVC script call the same library
function, so the same params give the same result either way (kept out of test_pipeline.py so
that it runs beside the fresh-clone pipeline under ``pytest -n``)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
import yaml
from conftest import ROOT

pytestmark = pytest.mark.slow


def test_cli_and_stage_give_the_same_calibration(tmp_path):
    """``coformer calibrate --params`` and the DVC script run one function: same inputs, same metrics."""
    from transformers import BertConfig, BertModel

    from coformer.loading import load_model

    tokenizer = load_model().processor
    model = tmp_path / "bert"
    BertModel(BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, vocab_size=tokenizer.vocab_size)).save_pretrained(model)
    tokenizer.save_pretrained(model)
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["base"] |= {"model": str(model), "tracking_uri": f"sqlite:///{tmp_path}/mlflow.db"}
    params["data"] |= {"calibration_limit": 48, "eval_limit": 8, "max_length": 16}
    params["calibrate"] |= {"steps_per_stage": 2, "final_steps": 2, "batch_size": 8, "max_length": 16, "checkpoint_every": 0, "threads": 1}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    cli = [sys.executable, "-c", "from coformer.cli import main; main()"]
    run = dict(cwd=tmp_path, capture_output=True, text=True, timeout=600, check=True)
    subprocess.run([*cli, "decompose", "--model", str(model), "--devices", "2", "--out", "dec"], **run)
    subprocess.run([*cli, "prepare", "--out", "data", "--metrics", "prepare.json"], **run)
    subprocess.run([*cli, "calibrate", "--params", "params.yaml", "--prepared", "data", "--decomposed", "dec", "--out", "by-cli"], **run)
    shutil.copytree(ROOT / "pipelines", tmp_path / "pipelines", ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run([sys.executable, "-m", "pipelines.calibrate", "prepared=data", "decomposed=dec", "out=by-stage"], **run)
    by_cli, by_stage = (json.loads((tmp_path / f / "metrics.json").read_text()) for f in ("by-cli", "by-stage"))
    assert by_cli.pop("seconds") > 0 and by_stage.pop("seconds") > 0
    assert by_cli == pytest.approx(by_stage, abs=1e-6)
