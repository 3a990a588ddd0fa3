"""DeBo stage 2: progressive calibration with Lightning, on tiny random models (all offline).

The quality target on the real default model lives in benchmarks/calibration.py; here: the
stage views compute exactly the executor's probes, calibration cuts the KL to the teacher, a
killed run resumes where it stopped, and what it exports is safetensors + JSON that the
executor loads unchanged.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from conftest import token_inputs, tiny_bert
from lightning.pytorch.callbacks import Callback

from coformer.adapters import canonicalize
from coformer.calibrate import (
    CalibrationConfig,
    CalibrationConfigError,
    CalibrationData,
    build_student,
    calibrate,
    load_student,
    plan,
)
from coformer.calibrate.losses import relative_mse, task_loss
from coformer.calibrate.module import CalibrationModule
from coformer.calibrate.run import resolve_precision
from coformer.calibrate.stages import set_trainable
from coformer.calibrate.targets import TeacherTargets
from coformer.calibrate.views import student_view, teacher_view
from coformer.calibrate.warmstart import least_squares_init
from coformer.decompose import DeviceShare, build_policy, compute_importance, shape_of
from coformer.errors import DataError
from coformer.evaluation import output_fidelity, recall_at_k
from coformer.executor import Ensemble, Teacher
from coformer.modeling import load_aggregator, load_submodel, save_module
from coformer.params import ParamsError, load_params


def gpt2_canonical():
    """Tiny random GPT-2; weights drawn with std 0.2 so the s = 0 streams really drift apart
    (at the default 0.02 the blocks barely change the stream and the KL starts near 1e-5)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    config = GPT2Config(n_embd=32, n_layer=2, n_head=4, vocab_size=100, n_positions=64, initializer_range=0.2)
    return canonicalize(GPT2LMHeadModel(config).eval())


def policy_for(canonical, devices=2, sync=0):
    shares = [DeviceShare(name=f"device{k}", heads=1, neurons=1) for k in range(devices)]
    return build_policy(shape_of(canonical), compute_importance(canonical.body, "magnitude"), shares, sync=sync)


def random_batches(n, seed, batch=16, length=24):
    g = torch.Generator().manual_seed(seed)
    return [{"input_ids": torch.randint(0, 100, (batch, length), generator=g)} for _ in range(n)]


def config(**overrides):
    values = dict(
        group_size=1, steps_per_stage=40, final_steps=160, lr=3e-3, beta2=0.999, batch_size=32, precision="32-true",
        checkpoint_every=0, threads=1, warm_start=True,
    )
    values |= overrides
    return CalibrationConfig(**values)


@pytest.fixture
def setup():
    canonical = gpt2_canonical()
    policy = policy_for(canonical)
    teacher = Teacher(canonical.body, canonical.head).eval().requires_grad_(False)
    return canonical, policy, teacher


class StageSpy(Callback):
    """Records (stage name, global step) at the start of every fit: which stages ran, from where."""

    def __init__(self):
        self.starts = []

    def on_train_start(self, trainer, pl_module):
        self.starts.append((pl_module.stage.name, trainer.global_step))


class Kill(Callback):
    """Stands in for a killed process: raises once the given stage reaches the given step."""

    def __init__(self, stage, step):
        self.stage, self.step = stage, step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if pl_module.stage.name == self.stage and trainer.global_step >= self.step:
            raise RuntimeError("killed")


@pytest.mark.parametrize("family,sync", [("gpt2", 0), ("gpt2", 2), ("bert", 0), ("bert", 1)])
def test_stage_views_compute_the_executor_probes(family, sync):
    canonical = canonicalize(tiny_bert()) if family == "bert" else gpt2_canonical()
    student = build_student(canonical, policy_for(canonical, devices=3, sync=sync))
    teacher = Teacher(canonical.body, canonical.head)
    inputs = token_inputs(batch=3, length=9)
    with torch.no_grad():
        full = student(inputs, probe={1, 2, 3} & set(range(canonical.config.num_layers + 1)))
        reference = teacher(inputs, probe={1, 2})
        for depth in full.probes:
            torch.testing.assert_close(student_view(student, depth)(inputs, probe={depth}).probes[depth], full.probes[depth])
        for depth in (1, 2):
            torch.testing.assert_close(teacher_view(teacher, depth)(inputs, probe={depth}).probes[depth], reference.probes[depth])


def test_plan_and_what_each_stage_trains(setup):
    assert [s.name for s in plan(6, config(group_size=4, steps_per_stage=5))] == ["lsq", "align4", "align6", "distill"]
    assert [(s.name, s.steps) for s in plan(6, config(steps_per_stage=0, final_steps=7, warm_start=False))] == [("distill", 7)]
    # every stage keeps the boundaries before its own aligned; the final stage aligns them all, unless weighted 0
    assert [s.aligned for s in plan(6, config(group_size=4, steps_per_stage=5))] == [(), (4,), (4, 6), (4, 6)]
    assert plan(6, config(group_size=2, steps_per_stage=0, final_steps=7))[-1].aligned == (2, 4, 6)
    assert plan(6, config(hidden_weight=0))[-1].aligned == ()
    canonical, policy, _ = setup
    student = build_student(canonical, policy)
    first, final = plan(2, config())[1], plan(2, config())[-1]
    set_trainable(student, first, config())
    sub = student.submodels[0]
    assert not sub.embed.word.weight.requires_grad and sub.embed.position.weight.requires_grad
    assert sub.blocks[0].attn.q.weight.requires_grad and not sub.blocks[1].attn.q.weight.requires_grad
    assert not student.aggregator.merges[0].linear.weight.requires_grad
    set_trainable(student, first, config(train_merges=True, freeze_embeddings=False))
    assert student.aggregator.merges[0].linear.weight.requires_grad and sub.embed.word.weight.requires_grad
    set_trainable(student, final, config())
    assert sub.blocks[1].attn.q.weight.requires_grad and student.aggregator.head.projection.weight.requires_grad


@pytest.mark.parametrize("family,sync,devices,channels", [("gpt2", 0, 2, 1.0), ("gpt2", 2, 3, 0.75), ("bert", 0, 2, 1.0), ("bert", 2, 5, 1.0)])
def test_least_squares_warm_start_brings_the_student_closer(family, sync, devices, channels):
    """Pre-LN (with the export discount) and post-LN, one and two merges, narrower streams, and
    (5 devices on 4 heads) shards without a single head in a block."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    if family == "bert":
        canonical = canonicalize(tiny_bert())
    else:
        gpt2 = GPT2Config(n_embd=32, n_layer=3, n_head=4, vocab_size=100, n_positions=64, initializer_range=0.2)
        canonical = canonicalize(GPT2LMHeadModel(gpt2).eval())
    shares = [DeviceShare(name=f"device{k}", heads=1, neurons=1, channels=channels) for k in range(devices)]
    policy = build_policy(shape_of(canonical), compute_importance(canonical.body, "magnitude"), shares, sync=sync)
    student, teacher = build_student(canonical, policy), Teacher(canonical.body, canonical.head)
    held_out = random_batches(4, seed=99)
    before = output_fidelity(teacher, student, held_out)["cosine"]
    errors = least_squares_init(teacher, student, random_batches(16, seed=1), ridge=1e-3)
    after = output_fidelity(teacher, student, held_out)["cosine"]
    assert sorted(errors) == policy_points(canonical, sync) and all(0 <= e < 1 for e in errors.values())
    assert after > before, (before, after)


def policy_points(canonical, sync):
    L = canonical.config.num_layers
    return [L] if sync == 0 else sorted({*range(sync, L, sync), L})


def test_least_squares_warm_start_keeps_an_exact_decomposition_exact(setup):
    """One device holding every unit is the teacher itself, a single model with no merge to fit."""
    canonical, _, teacher = setup
    policy = policy_for(canonical, devices=1)
    student = build_student(canonical, policy)
    errors = least_squares_init(teacher, student, random_batches(8, seed=1), ridge=0.0)
    inputs = token_inputs()
    assert policy.sync == 1 and errors == {} and not student.aggregator.merges
    torch.testing.assert_close(student(inputs).output, teacher(inputs).output, atol=1e-4, rtol=1e-4)


def test_auto_precision_is_bf16_only_where_bf16_is_native():
    """Emulated bf16 (an AVX2-only CPU) is ~50x slower than fp32: auto must not pick it there."""
    native = torch.ops.mkldnn._is_mkldnn_bf16_supported()
    assert resolve_precision("auto", "cpu") == ("bf16-mixed" if native else "32-true")
    assert resolve_precision("bf16-mixed", "cpu") == "bf16-mixed"  # an explicit choice is kept
    assert load_params(None).calibrate.precision == "auto"


@pytest.mark.parametrize(
    "overrides,message",
    [
        (["calibrate.lr=-1"], r"calibrate\.lr"),
        (["calibrate.hidden_loss=l1"], r"calibrate\.hidden_loss"),
        (["calibrate.epochs=3"], r"calibrate\.epochs"),
        (["calibrate.steps_per_stage=0", "calibrate.final_steps=0", "calibrate.warm_start=false"], "nothing would be calibrated"),
    ],
)
def test_bad_parameters_name_the_key(overrides, message):
    with pytest.raises(ParamsError, match=message):
        load_params(None, overrides)


def test_calibration_halves_the_kl_to_the_teacher(setup, tmp_path):
    canonical, policy, teacher = setup
    student = build_student(canonical, policy)
    held_out = random_batches(4, seed=99)
    before = output_fidelity(teacher, student, held_out)
    result = calibrate(
        teacher, student, policy, CalibrationData(random_batches(16, seed=1)), config(), tmp_path / "out",
        tracking_uri=f"sqlite:///{tmp_path}/mlflow.db", progress=False,
    )
    after = output_fidelity(teacher, student.eval(), held_out)
    assert result.stages == ["lsq", "align1", "align2", "distill"] and len(result.curve) == 240
    assert after["kl"] <= 0.5 * before["kl"], (before, after)
    assert after["cosine"] > before["cosine"]
    import mlflow

    run = mlflow.MlflowClient(f"sqlite:///{tmp_path}/mlflow.db").get_run(result.run_id)
    assert "train/distill/loss" in run.data.metrics and "warmstart/error_block2" in run.data.metrics
    assert run.data.params["calibrate/final_steps"] == "160"


def test_cached_teacher_targets_change_nothing_but_the_teacher_work(setup, tmp_path):
    """The cache runs the teacher once per batch for the whole run, and training ends bit-identical."""
    canonical, policy, teacher = setup
    batches = random_batches(4, seed=1)
    results = {}
    for gib in (2.0, 0.0):
        calls = []
        handle = teacher.register_forward_hook(lambda *_: calls.append(1))
        student = build_student(canonical, policy)
        cfg = config(steps_per_stage=6, final_steps=8, warm_start=False, teacher_cache_gib=gib)
        try:
            calibrate(teacher, student, policy, CalibrationData(batches), cfg, tmp_path / str(gib), None, progress=False)
        finally:
            handle.remove()
        results[gib] = (len(calls), student.state_dict())
    assert results[2.0][0] == len(batches)  # 20 steps over 4 batches: one teacher pass each
    assert results[0.0][0] == 8  # uncached, only the final stage runs the full teacher (once per step)
    for name, weight in results[0.0][1].items():
        torch.testing.assert_close(results[2.0][1][name], weight, rtol=0, atol=0, msg=name)


def test_teacher_cache_keeps_what_fits_and_computes_the_rest(setup):
    canonical, _, teacher = setup
    batches = random_batches(3, seed=2)
    entry = TeacherTargets(teacher, {1, 2}, budget_gib=1)(0, batches[0], teacher, {2}).nbytes  # output + 2 probes
    targets = TeacherTargets(teacher, {1, 2}, budget_gib=1.5 * entry / 2**30)  # room for one entry
    got = [targets(i, b, teacher_view(teacher, 1), {1}) for i, b in enumerate(batches)]
    assert list(targets.store) == [0] and sorted(got[0].probes) == [1, 2]  # kept, with every depth the run aligns
    assert sorted(got[2].probes) == [1]  # budget spent: the stage's own shallower view
    assert targets(0, batches[0], teacher, {2}) is got[0]
    with torch.no_grad():
        torch.testing.assert_close(got[2].probes[1], teacher(batches[2], probe={1}).probes[1])


def test_a_killed_run_resumes_from_the_last_completed_stage(setup, tmp_path):
    canonical, policy, teacher = setup
    data, out = CalibrationData(random_batches(8, seed=1)), tmp_path / "out"
    cfg = config(steps_per_stage=20, final_steps=20, checkpoint_every=10)
    tracking = f"sqlite:///{tmp_path}/mlflow.db"
    with pytest.raises(RuntimeError, match="killed"):
        calibrate(teacher, build_student(canonical, policy), policy, data, cfg, out, tracking, progress=False, callbacks=[Kill("align2", 15)])
    assert (out / "stages" / "2-align1" / "devices" / "device0" / "model.safetensors").is_file()
    assert not (out / "devices").exists()  # no final artifacts from a killed run
    checkpoint = out / "checkpoints" / "3-align2" / "last.ckpt"
    state = torch.load(checkpoint, weights_only=True)  # Lightning's own format, loadable without pickle code
    assert state["global_step"] == 10 and not any(k.startswith("teacher.") for k in state["state_dict"])

    spy = StageSpy()
    student = build_student(canonical, policy)
    result = calibrate(teacher, student, policy, data, cfg, out, tracking, progress=False, callbacks=[spy])
    assert result.resumed == ["lsq", "align1"]
    assert spy.starts == [("align2", 10), ("distill", 0)]  # align1 not redone; align2 from its checkpoint
    assert [r["step"] for r in result.curve] == list(range(1, 61))
    assert not (out / "checkpoints" / "3-align2").exists()
    saved = Ensemble(
        [load_submodel(out / "devices" / d.name) for d in policy.devices], load_aggregator(out / "aggregator"), policy.sync
    )
    inputs = token_inputs()
    torch.testing.assert_close(saved(inputs).output, student(inputs).output)

    with pytest.raises(CalibrationConfigError, match="other parameters"):
        calibrate(teacher, build_student(canonical, policy), policy, data, config(lr=1e-4), out, progress=False)
    changed = config(lr=1e-4, steps_per_stage=2, final_steps=2, warm_start=False)
    result = calibrate(teacher, build_student(canonical, policy), policy, data, changed, out, progress=False, restart_on_change=True)
    assert result.resumed == [] and result.stages == ["align1", "align2", "distill"]
    assert sorted(p.name for p in (out / "stages").iterdir()) == ["1-align1", "2-align2", "3-distill", "state.json"]


def test_exported_artifacts_are_safetensors_and_json_without_pickle(setup, tmp_path):
    canonical, policy, teacher = setup
    student = build_student(canonical, policy)
    out = tmp_path / "out"
    calibrate(teacher, student, policy, CalibrationData(random_batches(4, seed=1)), config(steps_per_stage=3, final_steps=3), out, progress=False)
    files = [p for p in out.rglob("*") if p.is_file()]
    assert files and {p.suffix for p in files} == {".safetensors", ".json"}
    for path in files:
        raw = path.read_bytes()
        assert b"\x80\x02" not in raw[:2] and b"\x80\x04" not in raw[:2] and not raw.startswith(b"PK")  # no pickle, no zip
        if path.suffix == ".safetensors":
            header = int.from_bytes(raw[:8], "little")
            assert json.loads(raw[8 : 8 + header])  # a safetensors header is plain JSON
        else:
            json.loads(raw)
    policy_back, saved = load_student(out)
    assert policy_back == policy
    inputs = token_inputs()
    with torch.no_grad():
        torch.testing.assert_close(saved(inputs).output, student(inputs).output)
    stage = load_student(out / "stages" / "3-align2")[1]
    assert not torch.equal(stage.submodels[0].blocks[0].attn.q.weight, saved.submodels[0].blocks[0].attn.q.weight)


def test_data_module_buckets_by_length_and_reorders_per_stage(minilm):
    texts = [("word " * n).strip() for n in (3, 40, 5, 38, 4, 41, 6, 39)]
    data = CalibrationData.from_texts(minilm.processor, texts, batch_size=4, max_length=16, seed=0, labels=list(range(8)))
    short, long = data.batches
    assert short["input_ids"].shape[1] < long["input_ids"].shape[1] == 16  # short texts batched together
    assert sorted(short["labels"].tolist()) == [0, 2, 4, 6]
    orders = set()
    for stage in range(6):
        data.stage = stage
        orders.add(tuple(int(b["labels"][0]) for b in data.train_dataloader()))
    assert len(orders) == 2  # both orders of the two batches occur across stages
    with pytest.raises(DataError, match="one label per text"):
        CalibrationData.from_texts(minilm.processor, texts, 4, 16, labels=[1])


def test_losses_and_labels():
    teacher = torch.randn(2, 5, 8)
    assert float(relative_mse(teacher, teacher)) == 0.0
    assert float(relative_mse(torch.zeros_like(teacher), teacher)) == pytest.approx(1.0)
    logits = torch.randn(2, 5, 100)
    labels = CalibrationModule.labels({"input_ids": torch.ones(2, 5, dtype=torch.long), "attention_mask": torch.tensor([[1] * 5, [1, 1, 0, 0, 0]])}, "lm")
    assert labels[1].tolist() == [1, 1, -100, -100, -100]
    head = gpt2_canonical().head.config
    assert torch.isfinite(task_loss(logits, labels, head))
    with pytest.raises(DataError, match="no labels"):
        CalibrationModule.labels({"input_ids": torch.ones(2, 5, dtype=torch.long)}, "classifier")


def test_recall_at_k_by_hand():
    queries = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    documents = torch.tensor([[1.0, 0.1], [1.0, 0.2], [0.9, 1.0]])
    # query 0 -> doc 0 is its best; query 1 -> doc 2 beats doc 1; query 2 -> doc 2 is its best
    assert recall_at_k(queries, documents, (1, 2)) == {1: pytest.approx(2 / 3), 2: 1.0}


@pytest.mark.slow
def test_cli_calibrates_a_decomposed_folder_and_resumes(tmp_path, minilm):
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    model_dir = tmp_path / "bert"
    config = BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, vocab_size=minilm.processor.vocab_size)
    BertModel(config).save_pretrained(model_dir)
    minilm.processor.save_pretrained(model_dir)
    cli = [sys.executable, "-c", "from coformer.cli import main; main()"]
    common = dict(capture_output=True, text=True, timeout=300, cwd=tmp_path)
    subprocess.run([*cli, "decompose", "--model", str(model_dir), "--devices", "2", "--out", "dec"], check=True, **common)
    small = [f"base.model={model_dir}", "data.calibration_limit=64", "data.eval_limit=8", "calibrate.steps_per_stage=2",
             "calibrate.final_steps=2", "calibrate.batch_size=16", f"base.tracking_uri=sqlite:///{tmp_path}/m.db"]  # fmt: skip
    args = ["calibrate", "--decomposed", "dec", "--out", "cal", *[a for s in small for a in ("--set", s)]]
    result = subprocess.run([*cli, *args], **common)
    assert result.returncode == 0, result.stderr[-2000:]
    assert (tmp_path / "cal" / "devices" / "device1" / "model.safetensors").is_file()
    again = subprocess.run([*cli, *args], **common)
    assert again.returncode == 0 and "resumed after stage(s) align2, distill" in again.stderr + again.stdout
    bad = subprocess.run([*cli, *args, "--set", "calibrate.lr=oops"], **common)
    assert bad.returncode == 2 and "calibrate.lr" in bad.stderr and "Traceback" not in bad.stderr


def test_merge_with_a_missing_stream_adds_the_learned_absent_correction(setup):
    canonical, policy, _ = setup
    aggregator = build_student(canonical, policy).aggregator
    merge = aggregator.merges[0]
    with torch.no_grad():
        merge.absent.copy_(torch.randn_like(merge.absent))
    x0, x1 = torch.randn(2, 5, merge.widths[0]), torch.randn(2, 5, merge.widths[1])
    expected = merge.linear(torch.cat([x0, torch.zeros_like(x1)], -1)) + merge.absent[1]  # (B, T, d)
    torch.testing.assert_close(aggregator.merge(0, [x0, None]), expected)
    torch.testing.assert_close(aggregator.merge(0, [x0, x1]), merge.linear(torch.cat([x0, x1], -1)))  # all present: no correction


def test_absent_correction_is_saved_and_artifacts_without_it_still_load(setup, tmp_path):
    from safetensors.torch import load_file, save_file

    canonical, policy, _ = setup
    aggregator = build_student(canonical, policy).aggregator
    with torch.no_grad():
        aggregator.merges[0].absent.fill_(0.5)
    folder = save_module(aggregator, tmp_path / "aggregator")
    assert (load_aggregator(folder).merges[0].absent == 0.5).all()
    weights = load_file(folder / "model.safetensors")
    old = {k: v for k, v in weights.items() if not k.endswith(".absent")}  # as written before the correction existed
    save_file(old, folder / "model.safetensors", metadata={"kind": "aggregator"})
    loaded = load_aggregator(folder)
    assert (loaded.merges[0].absent == 0).all()
    torch.testing.assert_close(loaded.merges[0].linear.weight, aggregator.merges[0].linear.weight)


def test_device_dropout_trains_the_merge_for_a_missing_stream(setup, tmp_path):
    canonical, policy, teacher = setup
    batches = random_batches(4, seed=1)
    absent = {}
    for rate in (0.0, 0.5):
        student = build_student(canonical, policy)
        settings = config(warm_start=False, steps_per_stage=0, final_steps=12, device_dropout=rate)
        calibrate(teacher, student, policy, CalibrationData(batches), settings, tmp_path / f"out{rate}", progress=False)
        absent[rate] = student.aggregator.merges[0].absent.detach()
    assert (absent[0.0] == 0).all()  # off: the correction never sees a missing stream
    assert absent[0.5].abs().sum(-1).gt(0).all()  # on: both devices were left out some steps
    module = CalibrationModule(teacher, build_student(canonical, policy), config(device_dropout=0.99), plan(2, config())[-1])
    present = module.present()
    assert present is not None and sorted(present) == [False, True]
