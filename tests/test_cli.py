"""The ``coformer`` command as a user runs it: a subprocess, real files, clear errors."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import tiny_gpt2

from coformer.cli import main
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


def test_bad_input_is_one_clear_line_in_a_real_process(tmp_path):
    result = run("decompose", "--model", str(tmp_path / "a" / "long" / "path" / "that" / "is" / "nowhere" / "at" / "all"), check=False)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "does not exist" in result.stderr  # no wrapping at 80 columns


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """A tiny GPT-2 saved without tokenizer, and the broken model folders a user may point at."""
    root = tmp_path_factory.mktemp("models")
    model = tiny_gpt2()
    model.save_pretrained(root / "gpt2")
    model.config.save_pretrained(root / "no-weights")
    (root / "not-a-model").mkdir()
    (root / "not-a-model" / "notes.txt").write_text("hello")
    (root / "no-model-type").mkdir()
    config = json.loads((root / "gpt2" / "config.json").read_text())
    (root / "no-model-type" / "config.json").write_text(json.dumps({k: v for k, v in config.items() if k != "model_type"}))
    (root / "a-file").write_text("not a folder")
    return root


def run_in_process(monkeypatch, capsys, *args) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of ``coformer ARGS`` through the real entry point; stderr is not a terminal."""
    monkeypatch.setattr(sys, "argv", ["coformer", *args])
    with pytest.raises(SystemExit) as stop:
        main()
    captured = capsys.readouterr()
    return stop.value.code, captured.out, captured.err


BAD_INPUTS = [
    (["--devices", "2", "--shares", "nan,1"], "--shares needs 2 positive finite numbers"),
    (["--devices", "2", "--shares", "inf,1"], "got 'inf,1'"),
    (["--devices", "2", "--shares", "1"], "--shares needs 2 positive finite numbers"),
    (["--sync", "9"], "sync interval s=9 is invalid"),
    (["--channels", "0"], "--channels 0.0 must be a fraction in (0, 1]"),
    (["--channels", "1.5"], "--channels 1.5 must be a fraction in (0, 1]"),
    (["--importance", "activation"], "--importance activation encodes calibration data"),
    (["--out", "{root}/a-file"], "a-file is a file; give a folder"),
    (["--model", "{root}/not-a-model"], "not-a-model' is not a transformers model folder (no config.json"),
    (["--model", "{root}/no-model-type"], "no-model-type/config.json has no model_type"),
    (["--model", "{root}/no-weights"], "no-weights' has a config.json but no weights"),
    (["--model", "{root}/nowhere"], "nowhere' does not exist; give a local model folder"),
]


@pytest.mark.parametrize("args,message", BAD_INPUTS, ids=[" ".join(a) for a, _ in BAD_INPUTS])
def test_every_bad_input_is_one_line_and_writes_nothing(monkeypatch, capsys, folders, args, message):
    out = folders / "out"
    args = [a.format(root=folders) for a in args]
    code, _, err = run_in_process(monkeypatch, capsys, "decompose", "--model", str(folders / "gpt2"), "--out", str(out), *args)
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and err.startswith("error: ") and message in err, err
    assert not out.exists()


def test_help_shows_choices_ranges_and_families_and_the_version_is_printed(monkeypatch, capsys):
    code, out, _ = run_in_process(monkeypatch, capsys, "--version")
    assert code == 0 and out.startswith("coformer ")
    monkeypatch.setenv("COLUMNS", "200")
    code, text, _ = run_in_process(monkeypatch, capsys, "decompose", "--help")
    assert code == 0
    for shown in ("balanced|grouped", "magnitude|activation", "in (0, 1]", "roberta", "deit"):
        assert shown in text
