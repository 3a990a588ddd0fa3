"""The cost model: parameter counts, invariants, regimes, baselines and memory feasibility."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from coformer.decompose import DeviceShare, build_policy, compute_importance, decompose, shape_of
from coformer.decompose.accounting import device_parameters
from coformer.errors import CoFormerError
from coformer.fleet import DeviceProfile, Fleet, ModelDims, UnitCounts, Workload, estimate, estimate_pipeline, load_fleet

MINILM = ModelDims(
    num_layers=6, num_heads=12, head_dim=32, ffn_size=1536, hidden_size=384, vocab_size=30522,
    max_positions=512, type_vocab_size=2, embedding="bert", pre_norm=False, final_norm=False,
)
GPT2 = ModelDims(num_layers=4, num_heads=8, head_dim=32, ffn_size=1024, hidden_size=256, vocab_size=2048, max_positions=256, causal=True, head_outputs=2048, tied_head=True)


def device(name: str, **figures) -> DeviceProfile:
    base = dict(
        matmul_flops=5e10, memory_bandwidth=1e10, memory_bytes=1e9, link_bandwidth=1e7, link_rtt_s=2e-3,
        active_power_w=6.0, idle_power_w=2.0, block_overhead_s=1e-4, forward_overhead_s=1e-4, source="test",
    )
    return DeviceProfile(name=name, **base | figures)


def random_counts(rng, dims: ModelDims, n: int, sync: int) -> UnitCounts:
    heads = rng.integers(0, dims.num_heads + 1, size=(n, dims.num_layers))
    neurons = rng.integers(0, dims.ffn_size + 1, size=(n, dims.num_layers))
    widths = np.full(n, dims.hidden_size) if sync == 1 else rng.integers(16, dims.hidden_size + 1, size=n)
    return UnitCounts(heads, neurons, widths, sync)


def test_gpt2_xl_parameter_count_matches_the_model_built_on_the_meta_device():
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(n_embd=1600, n_layer=48, n_head=25)
    with torch.device("meta"):
        model = GPT2LMHeadModel(config)
    independent = sum(p.numel() for p in model.parameters())  # the tied LM head counted once
    dims = ModelDims.from_hf_config(config)
    assert abs(dims.parameter_count() - independent) / independent < 1e-3
    assert 1.5e9 < dims.parameter_count() < 1.6e9


def test_bert_parameter_count_from_config_matches():
    from transformers import BertConfig, BertModel

    config = BertConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128, vocab_size=500)
    with torch.device("meta"):
        model = BertModel(config)
    assert ModelDims.from_hf_config(config).parameter_count() == sum(p.numel() for p in model.parameters())


def test_minilm_dims_and_per_device_parameters_match_the_real_sub_models(minilm):
    dims = ModelDims.from_canonical(minilm.canonical)
    body = sum(p.numel() for p in minilm.canonical.body.parameters())
    head = sum(p.numel() for p in minilm.canonical.head.parameters())
    assert dims.parameter_count() == body + head
    shares = [DeviceShare(name="big", heads=3, neurons=3), DeviceShare(name="small", heads=1, neurons=1, channels=0.5)]
    policy = build_policy(shape_of(minilm.canonical), compute_importance(minilm.canonical.body, "magnitude"), shares, keep=0.75)
    counts = UnitCounts.from_policy(policy)
    submodels, _ = decompose(minilm.canonical, policy)
    for k, sub in enumerate(submodels):
        modelled = dims.embedding_params(counts.widths[k]) + dims.block_params(counts.widths[k], counts.heads[k], counts.neurons[k]).sum()
        assert modelled == device_parameters(sub).total


def test_unit_counts_from_a_real_policy(minilm):
    shape = shape_of(minilm.canonical)
    shares = [DeviceShare(name="a", heads=2, neurons=1), DeviceShare(name="b", heads=1, neurons=3, channels=0.5)]
    policy = build_policy(shape, compute_importance(minilm.canonical.body, "magnitude"), shares, sync=2)
    counts = UnitCounts.from_policy(policy)
    assert counts.heads.shape == (2, 6) and counts.sync == 2
    assert counts.heads[:, 0].tolist() == [len(policy.devices[0].heads[0]), len(policy.devices[1].heads[0])]
    assert (counts.heads.sum(axis=0) == 12).all() and (counts.neurons.sum(axis=0) == 1536).all()
    assert counts.widths.tolist() == [384, 192]
    split = UnitCounts.split(MINILM, [2, 1], sync=2, channels=[1.0, 0.5])
    assert split.heads[:, 0].tolist() == counts.heads[:, 0].tolist()


@pytest.mark.parametrize("sync", [0, 1, 2, 3])
def test_more_units_are_never_faster(sync):
    rng = np.random.default_rng(sync)
    fleet = load_fleet("jetson")
    for dims, workload in ((MINILM, Workload(batch=2, seq_len=64)), (GPT2, Workload(batch=1, seq_len=16, decode_tokens=8))):
        for _ in range(25):
            counts = random_counts(rng, dims, len(fleet.devices), sync)
            before = estimate(counts, dims, fleet, workload)
            k, layer = rng.integers(len(fleet.devices)), rng.integers(dims.num_layers)
            heads, neurons = counts.heads.copy(), counts.neurons.copy()
            heads[k, layer] += 1
            neurons[k, layer] += 17
            after = estimate(UnitCounts(heads, neurons, counts.widths, sync), dims, fleet, workload)
            assert after.latency_s >= before.latency_s
            assert (after.device_latency_s >= before.device_latency_s).all()
            assert (after.memory_bytes >= before.memory_bytes).all() and after.memory_bytes[k] > before.memory_bytes[k]


@pytest.mark.parametrize("figure", ["link_bandwidth", "memory_bandwidth", "matmul_flops", "weight_bandwidth"])
def test_more_bandwidth_or_compute_is_never_slower(figure):
    rng = np.random.default_rng(7)
    fleet = load_fleet("jetson")
    for _ in range(20):
        sync = int(rng.choice([0, 1, 2]))
        counts = random_counts(rng, MINILM, len(fleet.devices), sync)
        k = int(rng.integers(len(fleet.devices)))
        old = fleet.devices[k]
        faster = old.model_copy(update={figure: (getattr(old, figure) or old.memory_bandwidth) * float(rng.uniform(1.1, 10))})
        devices = [faster if i == k else d for i, d in enumerate(fleet.devices)]
        upgraded = Fleet(name="up", devices=devices, aggregator=faster if k == fleet.host_index else fleet.aggregator)
        workload = Workload(batch=int(rng.integers(1, 5)), seq_len=int(rng.integers(8, 129)))
        assert estimate(counts, MINILM, upgraded, workload).latency_s <= estimate(counts, MINILM, fleet, workload).latency_s


def test_more_generated_tokens_cost_more_time_memory_and_traffic():
    fleet = load_fleet("paper")
    counts = UnitCounts.split(GPT2, [4, 3, 2, 1])
    short = estimate(counts, GPT2, fleet, Workload(seq_len=32, decode_tokens=4))
    long = estimate(counts, GPT2, fleet, Workload(seq_len=32, decode_tokens=32))
    assert long.latency_s > short.latency_s and long.comm_bytes > short.comm_bytes
    assert (long.memory_bytes > short.memory_bytes).all()  # KV cache


def test_communication_alone_is_the_slowest_link_worked_by_hand():
    """With free compute, s=0 costs one round trip (ids down, stream up) on the slowest device's link."""
    free = dict(matmul_flops=1e30, memory_bandwidth=1e30, weight_bandwidth=1e30, block_overhead_s=0.0, forward_overhead_s=0.0)
    gateway = device("gateway", **free)
    a, b = device("a", link_bandwidth=1e6, link_rtt_s=0.01, **free), device("b", link_bandwidth=4e6, link_rtt_s=0.001, **free)
    fleet = Fleet(name="hand", devices=[a, b], aggregator=gateway)
    dims = ModelDims(num_layers=2, num_heads=2, head_dim=8, ffn_size=8, hidden_size=16, vocab_size=10, max_positions=16)
    counts = UnitCounts(np.ones((2, 2)), np.ones((2, 2)), np.array([16, 8]), 0)
    report = estimate(counts, dims, fleet, Workload(batch=1, seq_len=100))
    ids, up_a, up_b = 100 * 8, 100 * 16 * 4, 100 * 8 * 4  # token ids down, (1, 100, w) float32 streams up
    assert report.comm_bytes == 2 * ids + up_a + up_b
    slow = 0.01 + (ids + up_a) / 1e6
    assert report.latency_s == pytest.approx(slow)
    assert report.device_latency_s.tolist() == pytest.approx([slow, 0.001 + (ids + up_b) / 4e6])
    two_syncs = estimate(UnitCounts(counts.heads, counts.neurons, counts.widths, 1 + 1), dims, fleet, Workload(batch=1, seq_len=100))
    assert two_syncs.latency_s == pytest.approx(slow)  # sync every 2 blocks of 2 = once
    per_block = estimate(UnitCounts(counts.heads, counts.neurons, np.array([16, 16]), 1), dims, fleet, Workload(batch=1, seq_len=100))
    all_reduce = 0.01 + 2 * 100 * 16 * 4 / 1e6  # partial up, sum back, on the slow link
    assert per_block.latency_s == pytest.approx(0.01 / 2 + ids / 1e6 + 4 * all_reduce)


def test_the_aggregators_host_pays_no_network():
    fleet = load_fleet("jetson")
    host = fleet.host_index
    report = estimate(UnitCounts.split(MINILM, [1, 1, 1, 1]), MINILM, fleet, Workload())
    own_work = report.compute_s - np.eye(len(fleet.devices))[host] * report.aggregator_s  # the host also merges
    assert report.device_latency_s[host] == pytest.approx(own_work[host])  # no time on the network
    remote = [k for k in range(len(fleet.devices)) if k != host]
    assert (report.device_latency_s[remote] > own_work[remote]).all()
    alone = estimate(UnitCounts.full(MINILM), MINILM, fleet.single(fleet.names[host]), Workload())
    assert alone.comm_bytes == 0 and report.comm_bytes > 0


def test_jetson_fleet_forces_a_split_but_fits_a_proportional_one():
    fleet = load_fleet("jetson")
    workload = Workload(batch=1, seq_len=128)
    for name in fleet.names:
        assert not estimate(UnitCounts.full(MINILM), MINILM, fleet.single(name), workload).feasible
    equal = estimate(UnitCounts.split(MINILM, [1, 1, 1, 1]), MINILM, fleet, workload)
    assert [name for name, _ in equal.overflow] == ["pi4"]
    proportional = estimate(UnitCounts.split(MINILM, [d.matmul_flops for d in fleet.devices]), MINILM, fleet, workload)
    assert proportional.feasible and proportional.latency_s < equal.latency_s


def test_energy_follows_power():
    fleet = load_fleet("paper")
    counts = UnitCounts.split(GPT2, [1, 1, 1, 1])
    report = estimate(counts, GPT2, fleet, Workload())
    busy, idle = report.compute_s, report.latency_s - report.compute_s
    expected = sum(d.active_power_w * b + d.idle_power_w * i for d, b, i in zip(fleet.devices, busy, idle))
    assert report.energy_j == pytest.approx(expected)
    dark = Fleet(name="dark", devices=[d.model_copy(update={"active_power_w": 0.0, "idle_power_w": 0.0}) for d in fleet.devices], aggregator=fleet.aggregator.model_copy(update={"active_power_w": 0.0, "idle_power_w": 0.0}))
    assert estimate(counts, GPT2, dark, Workload()).energy_j == 0


def test_pipeline_of_one_stage_is_the_full_model_and_more_stages_add_hops():
    fleet = load_fleet("paper")
    workload = Workload(seq_len=32, decode_tokens=4)
    one = fleet.single("orin-nano")
    full = estimate(UnitCounts.full(GPT2), GPT2, one, workload)
    staged = estimate_pipeline(GPT2, one, workload, [GPT2.num_layers])
    assert staged.latency_s == pytest.approx(full.latency_s, rel=0.02)
    assert staged.memory_bytes[0] == pytest.approx(full.memory_bytes[0], rel=0.02)
    split = estimate_pipeline(GPT2, fleet, workload, [1, 1, 1, 1])
    assert split.comm_bytes > 0 and split.memory_bytes.max() < full.memory_bytes[0]
    with pytest.raises(CoFormerError, match="must give 4 blocks"):
        estimate_pipeline(GPT2, fleet, workload, [1, 1])


def test_mismatched_policies_are_refused():
    fleet = load_fleet("jetson")
    with pytest.raises(CoFormerError, match="pass a sub-fleet"):
        estimate(UnitCounts.split(MINILM, [1, 1]), MINILM, fleet, Workload())
    with pytest.raises(CoFormerError, match="every width must equal hidden_size"):
        estimate(UnitCounts.split(MINILM, [1, 1, 1, 1], sync=1, channels=[1, 1, 1, 0.5]), MINILM, fleet, Workload())
    with pytest.raises(CoFormerError, match="3 blocks but the model has 6"):
        estimate(UnitCounts(np.ones((4, 3)), np.ones((4, 3)), np.full(4, 384), 0), MINILM, fleet, Workload())
    with pytest.raises(CoFormerError, match="shape"):
        UnitCounts(np.ones((4, 3)), np.ones((4, 2)), np.full(4, 384), 0)


def test_estimate_does_not_loop_over_units():
    """A billion neurons per block cost no more to estimate than a handful (vectorised over units)."""
    big = ModelDims(num_layers=6, num_heads=12, head_dim=32, ffn_size=10**9, hidden_size=384, vocab_size=1000)
    fleet = load_fleet("jetson")
    counts = UnitCounts.split(big, [1, 1, 1, 1])
    start = time.perf_counter()
    report = estimate(counts, big, fleet, Workload())
    assert time.perf_counter() - start < 0.5 and report.latency_s > 1.0


def test_speed_shares_make_devices_finish_together_and_regimes_compare():
    from coformer.fleet.compare import compare_regimes, memory_table, speed_shares

    fleet, workload = load_fleet("paper"), Workload(seq_len=64, decode_tokens=8)
    big = ModelDims.named("gpt2-medium", bytes_per_param=2)
    shares = speed_shares(big, fleet, workload)
    assert sum(shares) == pytest.approx(1) and min(shares) >= 0
    counts = UnitCounts.split(big, [s or 1e-9 for s in shares])
    from coformer.fleet.cost import block_seconds

    busy = block_seconds(counts, big, fleet, workload).sum(axis=1)
    taking = np.array(shares) > 0
    assert busy[taking].max() / busy[taking].min() < 1.15  # equal finish, up to whole units
    rows = compare_regimes(big, fleet, workload)
    assert [r.name.split(" ")[0] for r in rows] == ["full", "CoFormer", "tensor", "pipeline"]
    assert rows[0].speedup == 1 and rows[1].speedup > 1 > rows[2].speedup
    assert rows[1].report.memory_bytes.max() < rows[0].report.memory_bytes[0]
    table = memory_table(rows, fleet)
    assert set(table) == {r.name for r in rows} and set(table[rows[1].name]) == set(fleet.names)


def test_block_work_counts_flops_by_hand():
    from coformer.fleet.cost import block_work

    dims = ModelDims(num_layers=1, num_heads=2, head_dim=4, ffn_size=16, hidden_size=8, vocab_size=10, max_positions=8)
    counts = UnitCounts(np.array([[2]]), np.array([[16]]), np.array([8]), 0)
    work = block_work(counts, dims, Workload(batch=1, seq_len=5))
    M, d, inner, F = 5, 8, 8, 16
    products = 2 * M * d * inner * 4 + 2 * M * d * F * 2  # q, k, v, o; fc1, fc2
    attention = 4 * 1 * 2 * 5 * 5 * 4  # scores and context: 2 heads, 5 x 5 positions, head size 4
    assert work["flops"][0, 0] == products + attention
    assert work["weight_bytes"][0, 0] == 4 * (4 * d * inner + 3 * inner + 2 * d * F + F)


def test_predict_command_prints_every_regime():
    from typer.testing import CliRunner

    from coformer.cli import app

    result = CliRunner().invoke(app, ["predict", "--model", "gpt2", "--fleet", "paper", "--seq-len", "16", "--decode-tokens", "2"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    for label in ("full model on", "CoFormer (s=0)", "tensor parallel (s=1)", "pipeline (layer-wise)", "memory per device"):
        assert label in result.output
