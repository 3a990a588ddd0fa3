"""The measurement runtime: one real process per device over gloo reproduces the in-process
executor (s = 0, 1, 2, the pipeline split, the embedding at a gateway), on the loopback and on
shaped links, and leaves no process and no namespace behind when its parent is stopped."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path

import psutil
import pytest
import torch
from conftest import tiny_bert, token_inputs
from torch.testing import assert_close

from coformer.adapters import canonicalize
from coformer.calibrate import build_student, save_student
from coformer.decompose import DeviceShare, build_policy, compute_importance, shape_of
from coformer.runtime import RequestSet, RuntimeFailure, RuntimePlan, Zygote, run_plan, shaped, shaping_unavailable
from coformer.runtime.network import owned_namespaces

pytestmark = pytest.mark.slow
UNEVEN = [DeviceShare(name="big", heads=3, neurons=3), DeviceShare(name="small", heads=1, neurons=1)]


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """Student folders of a tiny BERT: two uneven devices at s = 0, 1, 2, and the full model."""
    canonical = canonicalize(tiny_bert())
    importance = compute_importance(canonical.body, "magnitude")
    root = tmp_path_factory.mktemp("students")
    out = {}
    for name, shares, sync in (("s0", UNEVEN, 0), ("s1", UNEVEN, 1), ("s2", UNEVEN, 2), ("full", [DeviceShare(name="one", heads=1, neurons=1)], 1)):
        policy = build_policy(shape_of(canonical), importance, shares, sync=sync)
        student = build_student(canonical, policy).eval()
        save_student(root / name, policy, student)
        out[name] = (root / name, student)
    return out


@pytest.fixture(scope="module")
def zygote():
    """One parent for every device process of this module (torch imported once)."""
    with Zygote() as started:
        yield started


def plan(folder, **kw) -> RuntimePlan:
    return RuntimePlan(folder=str(folder), sets=[RequestSet(name="x")], warmup=1, repeats=2, **kw)


@pytest.mark.parametrize(
    "name,options",
    [("s1", {"devices": 2, "embed_at_aggregator": True}), ("s2", {"devices": 2}), ("full", {"mode": "pipeline", "stages": [2, 1]})],
    ids=["s1-gateway", "s2", "pipeline"],
)
@torch.no_grad()
def test_processes_reproduce_the_executor(folders, zygote, name, options):
    folder, student = folders[name]
    batch = token_inputs()
    result = run_plan(plan(folder, **options), {"x": batch}, zygote=zygote)
    assert_close(result.sets["x"].output, student(batch).output, atol=1e-5, rtol=0)
    assert len(result.sets["x"].latency_s) == 2 and (result.sets["x"].latency_s > 0).all()
    if options.get("embed_at_aggregator"):  # devices hold no embedding table, the gateway does
        assert result.roles == ["gateway", "big", "small"]
        blocks = {k: t for k, t in student.submodels[1].state_dict().items() if not k.startswith("embed.")}
        assert result.param_bytes[2] == sum(t.numel() * t.element_size() for t in blocks.values())
    if name == "full":
        assert result.roles == ["stage 0", "stage 1"] and result.sets["x"].bytes_sent[0] > 0 == result.sets["x"].bytes_sent[1]


@torch.no_grad()
def test_devices_send_only_what_the_head_reads(tmp_path, zygote):
    """A mean-pooled sentence embedding at s = 0: a device sends the masked mean of its export,
    (B, 1, d) and its header, not (B, T, d); the output still equals the executor's."""
    canonical = canonicalize(tiny_bert(), pooling="mean", normalize=True)
    policy = build_policy(shape_of(canonical), compute_importance(canonical.body, "magnitude"), UNEVEN, sync=0)
    student = build_student(canonical, policy).eval()
    save_student(tmp_path, policy, student)
    batch = token_inputs()
    result = run_plan(plan(tmp_path, devices=2), {"x": batch}, zygote=zygote)
    assert_close(result.sets["x"].output, student(batch).output, atol=1e-5, rtol=0)
    B, T = batch["input_ids"].shape
    d = canonical.body.config.width
    assert B * d * 4 < result.sets["x"].bytes_sent[1] <= B * d * 4 + 64 < B * T * d * 4  # the tensor and its header


@torch.no_grad()
def test_s0_over_shaped_links_between_namespaces(folders, zygote):
    """Exact at s = 0 over real 50 Mbit/s links (fp32 wire; fp16 within its precision); where
    namespaces are not permitted, the same check on the loopback and the reason as a warning."""
    folder, student = folders["s0"]
    batch = token_inputs()
    sets = [RequestSet(name="x"), RequestSet(name="half", wire="fp16")]
    runtime_plan = RuntimePlan(folder=str(folder), devices=2, sets=sets, warmup=1, repeats=2)
    reason = shaping_unavailable()
    if reason:
        warnings.warn(f"slow links cannot be shaped here ({reason}); checked on the loopback", stacklevel=1)
        result = run_plan(runtime_plan, {"x": batch, "half": batch}, zygote=zygote)
    else:
        with shaped(2, 50) as network:
            result = run_plan(runtime_plan, {"x": batch, "half": batch}, network, zygote=zygote)
        assert owned_namespaces() == [] and result.link == "50 Mbit/s"
    want = student(batch).output
    assert_close(result.sets["x"].output, want, atol=1e-5, rtol=0)
    assert_close(result.sets["half"].output, want, atol=5e-2, rtol=0)
    assert result.sets["half"].bytes_sent[1] < 0.6 * result.sets["x"].bytes_sent[1]  # activations at half the bytes


def test_first_core_rotates_the_devices_over_the_cores():
    import os

    from coformer.runtime.launch import assign_cores

    cores = sorted(os.sched_getaffinity(0))
    rotated = RuntimePlan(folder="x", sets=[RequestSet(name="x")], devices=2, first_core=1, embed_at_aggregator=True)
    assert assign_cores(rotated) == [cores[1 % len(cores)], cores[1 % len(cores)], cores[2 % len(cores)]]  # the gateway with device 0


def test_system_tools_are_found_off_a_plain_path(monkeypatch):
    """ip, tc and sysctl live in sbin, which a plain user's PATH leaves out: looked up there too."""
    from coformer.runtime.network import SYSTEM_DIRS, tool

    if not any(Path(d, "tc").is_file() for d in SYSTEM_DIRS):
        pytest.skip("no tc installed in any sbin folder")
    monkeypatch.setenv("PATH", "/nonexistent")
    assert Path(tool("tc")).parent.as_posix() in SYSTEM_DIRS and tool("no-such-tool-here") == "no-such-tool-here"


def test_a_wrong_plan_fails_before_any_process_starts(folders):
    with pytest.raises(RuntimeFailure, match="one-device, sync 1 folder"):
        run_plan(plan(folders["s0"][0], mode="pipeline", stages=[2, 1]), {"x": token_inputs()})


PARENT = """
import sys, torch
sys.path.insert(0, {tests!r})
from conftest import token_inputs
from coformer.runtime import RequestSet, RuntimePlan, loopback, run_plan, shaped, shaping_unavailable
plan = RuntimePlan(folder={folder!r}, devices=2, sets=[RequestSet(name="x")], warmup=0, repeats=100000)
network = shaped(2, 100) if shaping_unavailable() is None else None
if network is None:
    run_plan(plan, {{"x": token_inputs()}})
else:
    with network as net:
        run_plan(plan, {{"x": token_inputs()}}, net)
"""


def test_stopping_the_parent_mid_run_leaves_no_process_and_no_namespace(folders, tmp_path):
    script = tmp_path / "parent.py"
    script.write_text(textwrap.dedent(PARENT.format(tests=str(Path(__file__).parent), folder=str(folders["s0"][0]))))
    parent = subprocess.Popen([sys.executable, str(script)])
    try:
        deadline, workers = time.monotonic() + 60, []
        while time.monotonic() < deadline and len(workers) < 3:
            time.sleep(0.5)
            workers = psutil.Process(parent.pid).children(recursive=True)  # the zygote and the device processes it forked
        assert len(workers) >= 3, "the device processes did not start"
        time.sleep(3)  # mid-run: joined, loading or timing
        parent.send_signal(signal.SIGTERM)
        parent.wait(timeout=30)
    finally:
        if parent.poll() is None:
            parent.kill()
    gone, alive = psutil.wait_procs(workers, timeout=10)
    assert not alive, f"device processes left: {[p.pid for p in alive]}"
    assert owned_namespaces(parent.pid) == []
