"""The ``coformer`` command as a user runs it: a subprocess, real files, clear errors."""

from __future__ import annotations

import subprocess
import sys

from conftest import tiny_gpt2

from coformer.decompose import Policy
from coformer.executor import Ensemble
from coformer.modeling import load_aggregator, load_submodel

COFORMER = [sys.executable, "-c", "from coformer.cli import main; main()"]


def run(*args, check=True):
    return subprocess.run([*COFORMER, *args], capture_output=True, text=True, timeout=300, check=check)


def test_decompose_writes_loadable_artifacts_and_a_table(tmp_path):
    tiny_gpt2().save_pretrained(tmp_path / "gpt2")
    out = tmp_path / "out"
    result = run("decompose", "--model", str(tmp_path / "gpt2"), "--devices", "3", "--sync", "2", "--shares", "3,2,1", "--out", str(out))
    for column in ("device", "heads", "neurons", "parameters", "bytes", "device2"):
        assert column in result.stderr + result.stdout
    policy = Policy.load(out / "policy.json")
    assert [d.name for d in policy.devices] == ["device0", "device1", "device2"] and policy.sync == 2
    heads = [sum(map(len, d.heads)) for d in policy.devices]
    assert heads == [6, 4, 2]  # 12 heads dealt 3:2:1
    subs = [load_submodel(out / "devices" / d.name) for d in policy.devices]
    student = Ensemble(subs, load_aggregator(out / "aggregator"), policy.sync)
    assert student({"input_ids": subs[0].channel_index[:5].unsqueeze(0)}).output.shape == (1, 5, 100)


def test_bad_input_is_one_clear_line(tmp_path):
    result = run("decompose", "--model", str(tmp_path / "nowhere"), check=False)
    assert result.returncode == 2
    assert "cannot load model" in result.stderr and "Traceback" not in result.stderr
    tiny_gpt2().save_pretrained(tmp_path / "gpt2")
    result = run("decompose", "--model", str(tmp_path / "gpt2"), "--devices", "2", "--shares", "1", check=False)
    assert result.returncode == 2 and "--shares needs 2 positive numbers" in result.stderr
    result = run("decompose", "--model", str(tmp_path / "gpt2"), "--sync", "9", check=False)
    assert result.returncode == 2 and "sync interval s=9 is invalid" in result.stderr
