"""Sub-models and aggregators survive a save/load round trip bit-exactly, in a process that never
imports transformers, and a corrupt artifact fails with a clear error."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from conftest import image_inputs, tiny_bert, tiny_gpt2, tiny_vit, token_inputs
from test_exactness import ensemble

from coformer.adapters import canonicalize
from coformer.decompose.accounting import device_parameters
from coformer.errors import ArtifactError
from coformer.modeling import load_aggregator, load_submodel, save_module
from coformer.modeling.artifacts import same_weights

FRESH_PROCESS = """
import sys, torch
torch.set_num_threads(1)  # same kernels as the parent, so sums run in the same order
from safetensors.torch import save_file
from coformer.modeling import load_aggregator, load_submodel
from coformer.executor import Ensemble
root, sync, inputs_file, out_file = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
from safetensors.torch import load_file
subs = [load_submodel(f"{root}/d{k}") for k in range(3)]
student = Ensemble(subs, load_aggregator(f"{root}/aggregator"), sync)
with torch.no_grad():
    out = student(load_file(inputs_file))
assert not any(m.startswith("transformers") for m in sys.modules), "serving path imported transformers"
save_file({"output": out.output.contiguous(), "hidden": out.hidden.contiguous()}, out_file)
"""


@pytest.mark.parametrize(
    "make,inputs,sync",
    [(tiny_gpt2, token_inputs, 0), (tiny_bert, token_inputs, 2), (tiny_vit, image_inputs, 1)],
    ids=["gpt2", "bert", "vit"],
)
@torch.no_grad()
def test_round_trip_is_bit_exact_without_transformers(tmp_path, make, inputs, sync):
    from safetensors.torch import load_file, save_file

    student = ensemble(canonicalize(make()), 3, sync=sync)
    for sub in student.submodels:
        save_module(sub, tmp_path / sub.config.name)
        assert same_weights(sub, load_submodel(tmp_path / sub.config.name))
    save_module(student.aggregator, tmp_path / "aggregator")
    assert same_weights(student.aggregator, load_aggregator(tmp_path / "aggregator"))

    batch = inputs()
    save_file(batch, tmp_path / "inputs.safetensors")
    script = [sys.executable, "-c", FRESH_PROCESS, str(tmp_path), str(sync), str(tmp_path / "inputs.safetensors")]
    subprocess.run([*script, str(tmp_path / "out.safetensors")], check=True, capture_output=True, timeout=120)
    fresh = load_file(tmp_path / "out.safetensors")
    expected = student(batch)
    assert torch.equal(fresh["output"], expected.output)
    assert torch.equal(fresh["hidden"], expected.hidden)
    assert b"pickle" not in (tmp_path / "d0" / "model.safetensors").read_bytes()[:8]


def test_corrupt_weights_give_a_clear_error(tmp_path):
    student = ensemble(canonicalize(tiny_gpt2()), 2, sync=0)
    save_module(student.submodels[0], tmp_path / "node")
    (tmp_path / "node" / "model.safetensors").write_bytes(b"\x00\x01garbage")
    with pytest.raises(ArtifactError, match="cannot read .*model.safetensors.*re-export"):
        load_submodel(tmp_path / "node")


def test_missing_or_mixed_up_artifacts_give_clear_errors(tmp_path):
    with pytest.raises(ArtifactError, match="no config.json"):
        load_submodel(tmp_path)
    student = ensemble(canonicalize(tiny_gpt2()), 2, sync=0)
    save_module(student.aggregator, tmp_path / "agg")
    with pytest.raises(ArtifactError, match="holds a aggregator, expected a submodel"):
        load_submodel(tmp_path / "agg")
    config = json.loads((tmp_path / "agg" / "config.json").read_text())
    config["config"]["hidden_size"] = "wide"
    (tmp_path / "agg" / "config.json").write_text(json.dumps(config))
    with pytest.raises(ArtifactError, match="corrupt"):
        load_aggregator(tmp_path / "agg")


@pytest.mark.parametrize("devices", [2, 3, 4])
@pytest.mark.parametrize("make", [lambda: tiny_gpt2(lm_head=False), tiny_bert, tiny_vit], ids=["gpt2", "bert", "vit"])
def test_sync1_split_adds_up_to_the_original_parameters(make, devices):
    canonical = canonicalize(make())
    student = ensemble(canonical, devices, sync=1)
    counts = [device_parameters(sub) for sub in student.submodels]
    original = sum(p.numel() for p in canonical.body.parameters())
    shared = counts[0].shared
    assert all(c.shared == shared for c in counts), "every device replicates the same shared weights"
    assert sum(c.unit for c in counts) + shared == original
    assert all(c.bytes > 0 for c in counts)
    for c in counts:
        print(f"{c.name}: unit {c.unit:,} shared {c.shared:,} bytes {c.bytes:,}")


def test_weights_that_do_not_match_their_config_name_the_shapes(tmp_path):
    from safetensors.torch import load_file, save_file

    student = ensemble(canonicalize(tiny_gpt2()), 2, sync=0)
    save_module(student.submodels[0], tmp_path / "node")
    other = ensemble(canonicalize(tiny_gpt2()), 3, sync=0)
    save_module(other.submodels[0], tmp_path / "other")
    save_file(load_file(tmp_path / "other" / "model.safetensors"), tmp_path / "node" / "model.safetensors")
    with pytest.raises(ArtifactError, match=r"weights do not match its config \(blocks\.0\.attn\.k\.bias is \(16,\), the config says \(24,\)") as error:
        load_submodel(tmp_path / "node")
    assert "\n" not in str(error.value) and "re-export" in str(error.value)


def test_a_sub_model_without_qkv_biases_round_trips(tmp_path):
    from test_exactness import tiny_encoder

    sub = ensemble(canonicalize(tiny_encoder("ViTModel", qkv_bias=False)), 2, sync=0).submodels[1]
    save_module(sub, tmp_path / "node")
    assert same_weights(sub, load_submodel(tmp_path / "node"))
    assert sub.blocks[0].attn.q.bias is None
