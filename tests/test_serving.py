"""Serving logic without servers: wire format, validation, the aggregator's rounds over in-process
nodes (equal to the executor), generation sessions, failure modes and KV-cache rebuilds."""

from __future__ import annotations

import asyncio
import base64
import io
import pickle

import pytest
import torch
from conftest import token_inputs
from serving_fleet import MODELS, greedy, in_process_fleet, saved_student
from torch.testing import assert_close

from coformer.adapters import canonicalize
from coformer.errors import CoFormerError
from coformer.fleet import ModelDims
from coformer.serving import wire
from coformer.serving.artifacts import policy_and_configs
from coformer.serving.config import Deployment
from coformer.serving.errors import NodeUnavailable, RequestError, Unauthorized
from coformer.serving.frontend import Frontend
from coformer.serving.profiling import dims_of
from coformer.serving.security import check_token
from coformer.serving.sessions import Sampling


def run(coroutine):
    return asyncio.run(coroutine)


def test_wire_roundtrip_keeps_dtype_and_shape_and_halves_bytes():
    x = torch.randn(2, 5, 8)
    ids = torch.arange(10).view(2, 5)
    exact, meta = wire.decode(wire.encode({"x": x, "ids": ids}, {"op": "segment"}), 10**6)
    assert meta == {"op": "segment"} and torch.equal(exact["x"], x) and torch.equal(exact["ids"], ids)
    half = wire.encode({"x": x}, dtype="bfloat16")
    assert len(half) < len(wire.encode({"x": x})) and wire.decode(half, 10**6)[0]["x"].dtype == torch.float32


def test_wire_refuses_oversized_and_foreign_bodies():
    with pytest.raises(RequestError, match="max_body_bytes=100") as e:
        wire.decode(wire.encode({"x": torch.zeros(100)}), 100)
    assert e.value.status == 413
    with pytest.raises(RequestError, match="not a safetensors message"):
        wire.decode(pickle.dumps({"x": [1, 2]}), 10**6)


def test_token_check_is_exact():
    check_token("Bearer s3cret", "s3cret", "node")
    for header in (None, "Bearer wrong", "s3cre"):
        with pytest.raises(Unauthorized, match="Authorization: Bearer"):
            check_token(header, "s3cret", "node")


@pytest.mark.parametrize("family,sync", [("bert", 0), ("bert", 2), ("bert", 1), ("gpt2", 0), ("gpt2", 1), ("gpt2", 2)])
def test_rounds_over_nodes_equal_the_executor(tmp_path, family, sync):
    folder, student = saved_student(tmp_path, family, sync)
    runtime, _ = in_process_fleet(folder)
    inputs = token_inputs()
    got = run(runtime.forward(inputs, "r"))
    with torch.no_grad():
        want = student(inputs)
    assert_close(got.output, want.output, atol=1e-5, rtol=1e-5)
    assert got.missing == []


@pytest.mark.parametrize("pooling", ["mean", "cls"])
def test_nodes_send_only_what_the_head_reads(tmp_path, pooling):
    """An embedding reads the masked mean (or the CLS position) of the last state: every node
    answers with (B, 1, w) instead of (B, T, w), and the output still equals the executor's."""
    folder, student = saved_student(tmp_path, "bert", 0, pooling=pooling)
    runtime, nodes = in_process_fleet(folder)
    inputs = token_inputs()
    got = run(runtime.forward(inputs, "r"))
    with torch.no_grad():
        assert_close(got.output, student(inputs).output, atol=1e-5, rtol=1e-5)
    for node in nodes.values():
        answer, _ = wire.decode(node.answers[-1], 1 << 20)
        assert answer["out"].shape == (inputs["input_ids"].shape[0], 1, node.runtime.model.config.width)


def test_half_precision_wire_is_close(tmp_path):
    folder, student = saved_student(tmp_path, "bert", 0)
    runtime, _ = in_process_fleet(folder, wire_dtype="float16")
    inputs = token_inputs()
    with torch.no_grad():
        want = student(inputs).output
    assert_close(run(runtime.forward(inputs, "r")).output, want, atol=5e-3, rtol=5e-3)


@pytest.mark.parametrize("sync", [0, 1])
def test_greedy_generation_equals_the_in_process_loop_with_left_padding(tmp_path, sync):
    folder, student = saved_student(tmp_path, "gpt2", sync)
    runtime, nodes = in_process_fleet(folder)
    frontend = Frontend(runtime)
    prompts = [[5, 6, 7, 8, 9], [11, 12, 13]]
    answer = run(frontend.generate(None, prompts, 20, Sampling(), None, None, False, "r"))
    prompt = frontend.tokens(None, prompts, left=True)
    assert answer.tokens == greedy(student, prompt["input_ids"], prompt["attention_mask"], 20).tolist()
    alone = run(frontend.generate(None, prompts[1:], 20, Sampling(), None, None, False, "r"))
    assert alone.tokens[0] == answer.tokens[1]  # left padding changes nothing
    assert not frontend.sessions.open and all(not n.runtime.sessions for n in nodes.values())


@pytest.mark.parametrize("sync", [0, 2])
def test_node_restarted_mid_session_rebuilds_its_cache(tmp_path, sync):
    folder, student = saved_student(tmp_path, "gpt2", sync)
    runtime, nodes = in_process_fleet(folder)
    frontend = Frontend(runtime)
    first = run(frontend.generate(None, [[1, 2, 3]], 8, Sampling(), None, None, True, "r"))
    nodes["d1"].restart()
    rest = run(frontend.generate(None, None, 12, Sampling(), None, first.session, False, "r"))
    want = greedy(student, torch.tensor([[1, 2, 3]]), torch.ones(1, 3, dtype=torch.long), 20)
    assert first.tokens[0] + rest.tokens[0] == want[0].tolist()


def test_sampling_is_reproducible_with_a_seed(tmp_path):
    folder, _ = saved_student(tmp_path, "gpt2", 0)
    frontend = Frontend(in_process_fleet(folder)[0])
    sampling = Sampling(do_sample=True, temperature=0.8, top_k=20, top_p=0.9)
    a, b = (run(frontend.generate(None, [[1, 2]], 10, sampling, 7, None, False, "r")).tokens for _ in range(2))
    assert a == b


def test_fail_fast_names_the_node_and_degraded_flags_it(tmp_path):
    folder, student = saved_student(tmp_path, "bert", 0)
    inputs = token_inputs()
    runtime, nodes = in_process_fleet(folder)
    nodes["d1"].down = True
    with pytest.raises(NodeUnavailable, match="d1") as e:
        run(runtime.forward(inputs, "r"))
    assert e.value.status == 503
    runtime, nodes = in_process_fleet(folder, failure_mode="degraded")
    nodes["d1"].down = True
    got = run(runtime.forward(inputs, "r"))
    with torch.no_grad():
        want = student(inputs, present=[True, False]).output
    assert got.missing == ["d1"]
    assert_close(got.output, want, atol=1e-5, rtol=1e-5)
    nodes["d1"].down = False  # back: used again
    assert run(runtime.forward(inputs, "r")).missing == []


def test_validation_names_the_limit_and_leaves_no_session(tmp_path):
    folder, _ = saved_student(tmp_path, "gpt2", 0)
    runtime, nodes = in_process_fleet(folder, limits={"max_batch": 2, "max_seq_len": 16})
    frontend = Frontend(runtime)
    with pytest.raises(RequestError, match="max_batch=2"):
        run(runtime.forward(token_inputs(batch=3), "r"))
    with pytest.raises(RequestError, match="max_seq_len=16"):
        run(frontend.generate(None, [[1] * 10], 10, Sampling(), None, None, False, "r"))
    with pytest.raises(RequestError, match=r"input_ids must lie in \[0, 100\)"):
        run(frontend.generate(None, [[1, 500]], 2, Sampling(), None, None, False, "r"))
    assert not frontend.sessions.open and all(not n.runtime.sessions and not n.runtime.runs for n in nodes.values())


def test_a_client_that_disconnects_stops_generation_and_frees_every_cache(tmp_path):
    folder, _ = saved_student(tmp_path, "gpt2", 0)
    runtime, nodes = in_process_fleet(folder)
    frontend = Frontend(runtime)
    polls = []

    async def gone() -> bool:  # polled before every token: the client leaves after three
        polls.append(len(polls))
        return len(polls) > 3

    with pytest.raises(asyncio.CancelledError):
        run(frontend.generate(None, [[1, 2, 3]], 10, Sampling(), None, None, True, "r", gone=gone))
    assert len(polls) == 4  # three tokens, then the loop stopped
    assert not frontend.sessions.open and all(not n.runtime.sessions and not n.runtime.runs for n in nodes.values())


def test_images_are_classified_as_the_executor_does(tmp_path):
    """Base64 image files through the image processor and the nodes: the executor's logits, the
    nodes answering with the CLS position only; a file that is no image is refused by index."""
    from PIL import Image
    from transformers import ViTImageProcessor

    folder, student = saved_student(tmp_path, "vit", 0)
    runtime, nodes = in_process_fleet(folder)
    frontend = Frontend(runtime, ViTImageProcessor(size={"height": 16, "width": 16}))
    files = []
    for seed in (0, 1):
        pixels = torch.randint(0, 256, (20, 24, 3), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)
        buffer = io.BytesIO()
        Image.fromarray(pixels.numpy()).save(buffer, format="PNG")
        files.append(base64.b64encode(buffer.getvalue()).decode())
    inputs = frontend.images(files)
    got = run(frontend.classify(inputs, "r"))
    with torch.no_grad():
        want = student(inputs).output  # (2, C)
    assert_close(torch.tensor(got.logits), want, atol=1e-5, rtol=1e-5)
    assert got.labels == want.argmax(-1).tolist() and not got.degraded
    for node in nodes.values():
        assert wire.decode(node.answers[-1], 1 << 20)[0]["out"].shape[1] == 1
    with pytest.raises(RequestError, match="image 1 is not a base64-encoded image file"):
        frontend.images([files[0], base64.b64encode(b"not an image").decode()])


def test_idle_sessions_are_freed_on_the_aggregator_and_every_node(tmp_path):
    folder, _ = saved_student(tmp_path, "gpt2", 0)
    runtime, nodes = in_process_fleet(folder, session_idle_s=0.01)
    frontend = Frontend(runtime)

    async def scenario():
        kept = await frontend.generate(None, [[1, 2, 3]], 2, Sampling(), None, None, True, "r")
        assert all(kept.session in n.runtime.sessions for n in nodes.values())
        await asyncio.sleep(0.05)
        await frontend.sessions.expire()
        return kept.session

    session = run(scenario())
    assert session not in frontend.sessions.open and all(not n.runtime.sessions for n in nodes.values())


def test_deployment_file_round_trips_and_refuses_unknown_keys(tmp_path):
    site = Deployment(nodes={"d0": "http://10.0.0.11:3000"}, failure_mode="degraded", wire_dtype="float16", limits={"max_batch": 4})
    assert Deployment.load(site.save(tmp_path / "site.yaml")) == site
    (tmp_path / "bad.yaml").write_text("nodes: {}\nfailure: degraded\n")
    with pytest.raises(CoFormerError, match="failure"):
        Deployment.load(tmp_path / "bad.yaml")


def test_node_profile_measures_at_the_original_shapes(tmp_path):
    folder, _ = saved_student(tmp_path, "gpt2", 0)
    policy, configs = policy_and_configs(folder)
    got, want = dims_of(configs[1], policy.shape), ModelDims.from_canonical(canonicalize(MODELS["gpt2"]()))
    fields = ("num_layers", "num_heads", "head_dim", "ffn_size", "hidden_size", "vocab_size", "max_positions", "embedding", "causal")
    assert [getattr(got, f) for f in fields] == [getattr(want, f) for f in fields]
