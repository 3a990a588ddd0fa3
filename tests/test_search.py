"""DeBo stage 1 end to end on a tiny BERT and a tiny fleet: real Ray Tune trials, real files.

The fleet's memory budgets are fractions of what the cost model says the whole model needs, so
no device can hold it alone and the search must split it.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import tiny_bert, tiny_gpt2, token_inputs

from coformer.adapters import canonicalize
from coformer.decompose import DeviceShare, Policy, build_policy, compute_importance, decompose, shape_of
from coformer.errors import CoFormerError, InfeasibleFleetError, PolicyError
from coformer.fleet.cost import ModelDims, UnitCounts, Workload, estimate
from coformer.fleet.profile import DeviceProfile, Fleet
from coformer.search import SearchConfig, SearchSpace, run_search
from coformer.search.degradation import per_item
from coformer.search.evaluate import Evaluator
from coformer.search.refit import split_rows
from coformer.search.results import knee, pareto_mask
from coformer.search.space import Candidate
from coformer.search.tuning import check_stored, ray_session

pytestmark = pytest.mark.slow

WORKLOAD = {"batch": 1, "seq_len": 9}
TEXTS = {"texts": 8, "fit_texts": 6}  # of the 8 calibration rows, 6 fit the refit and D is measured on 2


def full_memory(canonical) -> float:
    """Bytes the whole model needs on one device, by the cost model."""
    dims = ModelDims.from_canonical(canonical)
    roomy = device("roomy", 1e12, 1e12)
    report = estimate(UnitCounts.full(dims), dims, Fleet(name="one", devices=[roomy], aggregator=roomy), Workload(**WORKLOAD))
    return float(report.memory_bytes[0])


def device(name: str, flops: float, memory: float) -> DeviceProfile:
    return DeviceProfile(
        name=name, matmul_flops=flops, memory_bandwidth=flops / 10, memory_bytes=memory, link_bandwidth=1e7,
        link_rtt_s=0.002, active_power_w=5.0, idle_power_w=1.0, source="test",
    )


def tiny_fleet(canonical, fractions=(0.7, 0.55, 0.4)) -> Fleet:
    full = full_memory(canonical)
    devices = [device(f"dev{k}", 1e9 / (k + 1), f * full) for k, f in enumerate(fractions)]
    gateway = device("gateway", 1e9, 1e12)
    return Fleet(name="tiny", devices=devices, aggregator=gateway)


@pytest.fixture(scope="module")
def canonical():
    return canonicalize(tiny_bert())


@pytest.fixture(scope="module")
def batches():
    return [token_inputs(batch=4, length=9, seed=1), token_inputs(batch=4, length=9, seed=2)]


@pytest.fixture(scope="module")
def ray():
    with ray_session(num_cpus=2):  # one Ray for the module; run_search reuses it
        yield


@pytest.fixture(scope="module")
def searched(tmp_path_factory, ray, canonical, batches):
    out = tmp_path_factory.mktemp("search")
    config = SearchConfig(trials=4, seed=0, **WORKLOAD, **TEXTS)
    result = run_search(canonical, batches, tiny_fleet(canonical), config, out)
    return out, config, result, pd.read_csv(out / "trials.csv")


def test_search_runs_real_trials_and_writes_every_output(searched):
    out, config, result, trials = searched
    for name in ("policy.json", "trials.csv", "pareto.csv", "metrics.json", "pareto.png"):
        assert (out / name).stat().st_size > 0, name
    results = sorted((out / "ray" / "tpe-000").glob("trial_*/result.json"))
    assert len(results) == 4  # four Ray Tune trials ran and reported
    assert len(trials) == 4 and list(trials["trial"]) == [0, 1, 2, 3]
    for column in ("keep", "sync", "dealing", "heads.dev0", "use.dev2", "latency_ms", "degradation", "mem_mib.dev1", "feasible"):
        assert column in trials.columns, column
    measured = trials[trials["feasible"]]
    assert (measured["degradation"] >= 0).all() and measured["latency_ms"].gt(0).all()
    assert (measured["degradation_uncalibrated"] >= 0).all()  # reported beside the calibration-aware D
    assert set(trials["method"]) <= {"Single-Edge", "Distri-Edge", "Aggregate-Edge", "Aggregate-Edge/s=2", "Aggregate-Edge/s=3", ""}
    single = trials[trials["devices"].str.count(r"\+") == 0]
    assert (single["method"] == "Single-Edge").all() and (single["sync"] == 1).all()  # one device: no merge
    assert trials.loc[~trials["feasible"], "degradation"].isna().all()  # not run when it does not fit
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["trials"] == 4 and metrics["feasible_trials"] == len(measured)
    assert metrics["degradation_estimate"] == "refit" and "best_objective.Single-Edge" in metrics


def test_pareto_csv_is_the_nondominated_feasible_trials(searched):
    out, _, _, trials = searched
    front = pd.read_csv(out / "pareto.csv")
    feasible = trials[trials["feasible"]]
    for _, row in feasible.iterrows():
        better = feasible[(feasible["latency_ms"] <= row["latency_ms"]) & (feasible["degradation"] <= row["degradation"])]
        strictly = better[(better["latency_ms"] < row["latency_ms"]) | (better["degradation"] < row["degradation"])]
        assert (row["trial"] in set(front["trial"])) == strictly.empty


def test_chosen_policy_fits_every_device_and_minimises_the_objective(searched, canonical):
    out, config, result, trials = searched
    policy = Policy.load(out / "policy.json")
    fleet = tiny_fleet(canonical)
    names = [d.name for d in policy.devices]
    report = estimate(UnitCounts.from_policy(policy), ModelDims.from_canonical(canonical), fleet.subset(names), config.workload())
    budgets = [fleet.devices[fleet.names.index(n)].memory_bytes for n in names]
    assert report.feasible and all(m <= b for m, b in zip(report.memory_bytes, budgets))
    feasible = trials[trials["feasible"]]
    chosen = trials.loc[trials["objective"].idxmin()]
    assert result.metrics["chosen_trial"] == chosen["trial"] and chosen["devices"] == "+".join(names)
    assert chosen["objective"] == pytest.approx(chosen["latency_ms"] + config.lam * chosen["degradation"])
    assert chosen["objective"] == feasible["objective"].min()


def test_resumed_search_keeps_the_stored_trials_and_continues_the_sampler(searched, canonical, batches):
    out, config, _, before = searched
    more = config.model_copy(update={"trials": 7})
    run_search(canonical, batches, tiny_fleet(canonical), more, out)
    after = pd.read_csv(out / "trials.csv")
    assert len(after) == 7
    stored = ["trial", "experiment", "keep", "sync", "dealing", "heads.dev0", "latency_ms", "degradation", "feasible"]
    pd.testing.assert_frame_equal(after.loc[:3, stored], before[stored])
    assert len(list((out / "ray" / "tpe-001").glob("trial_*/result.json"))) == 3  # only the new ones ran
    # A fresh sampler with the same seed would propose the first points again; the restored one moves on.
    assert not np.allclose(after.loc[4:6, "keep"].to_numpy(), before.loc[0:2, "keep"].to_numpy())


def test_infeasible_fleet_names_the_device_and_the_shortfall(canonical, batches, tmp_path):
    fleet = tiny_fleet(canonical, fractions=(0.12, 0.1, 0.08))
    with pytest.raises(InfeasibleFleetError) as error:
        run_search(canonical, batches, fleet, SearchConfig(trials=2, **WORKLOAD, **TEXTS), tmp_path)
    message = str(error.value)
    assert "'dev2' needs" in message and "KiB more than its" in message and "search.keep_min" in message
    assert not (tmp_path / "ray").exists()  # failed before any trial


def test_cli_reports_an_infeasible_fleet_in_one_line(canonical, tmp_path):
    tiny_gpt2().save_pretrained(tmp_path / "gpt2")
    model = canonicalize(tiny_gpt2())
    tiny_fleet(model, fractions=(0.1, 0.1)).save(tmp_path / "fleet.json")
    result = subprocess.run(
        [sys.executable, "-c", "from coformer.cli import main; main()", "search", "--set", f"base.model={tmp_path / 'gpt2'}",
         "--fleet", str(tmp_path / "fleet.json"), "--set", "search.trials=2", "--out", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "no decomposition policy fits fleet 'tiny'" in result.stderr and "dev0" in result.stderr


def test_mlflow_run_holds_policy_trials_and_plot(searched, tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    from coformer.params import load_params
    from coformer.search.report import FILES
    from coformer.tracking import log_outputs, stage_run

    monkeypatch.chdir(tmp_path)  # MLflow puts artifacts under ./mlruns
    out, config, result, _ = searched
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    params = load_params(None, [f"base.tracking_uri={uri}", "base.experiment=search-test", "search.lambda=7.5"])
    with stage_run(params, "search") as run:
        log_outputs(result.metrics, [out / name for name in FILES])
    client = MlflowClient(uri)
    assert {a.path for a in client.list_artifacts(run.info.run_id)} >= {"policy.json", "trials.csv", "pareto.csv", "pareto.png"}
    logged = client.get_run(run.info.run_id)
    assert logged.data.metrics["best_objective"] == pytest.approx(result.metrics["best_objective"])
    assert logged.data.params["search.lambda"] == "7.5" and logged.data.tags["coformer.stage"] == "search"


def test_a_different_space_refuses_to_mix_with_stored_trials(tmp_path):
    store = tmp_path / "ray"
    check_stored(store, {"space": {"keep_min": 0.5}})
    (store / "tpe-000").mkdir()
    check_stored(store, {"space": {"keep_min": 0.5}})  # same space: fine
    with pytest.raises(CoFormerError, match="differs in: space.keep_min"):
        check_stored(store, {"space": {"keep_min": 0.7}})
    assert (store / "tpe-000").is_dir()  # nothing discarded on error
    check_stored(store, {"space": {"keep_min": 0.7}}, on_change="restart")
    assert not (store / "tpe-000").exists() and "0.7" in (store / "space.json").read_text()


def test_decoding_drops_unused_devices_and_keeps_full_streams_at_sync_1(canonical):
    space = SearchSpace(tiny_fleet(canonical), shape_of(canonical), SearchConfig())
    device = {"heads": 0.5, "neurons": 0.5, "channels": 0.6, "use": True}
    params = {"devices": {"dev0": device, "dev1": device | {"use": False}, "dev2": device}, "keep": 0.8, "dealing": "grouped"}
    narrow = space.decode(params | {"sync": 0})
    assert narrow.names == ["dev0", "dev2"] and [s.channels for s in narrow.shares] == [0.6, 0.6]
    assert [s.channels for s in space.decode(params | {"sync": 1}).shares] == [1.0, 1.0]
    nobody = {name: device | {"use": False} for name in ("dev0", "dev1", "dev2")}
    assert space.decode(params | {"sync": 0, "devices": nobody}).shares == ()


def test_pareto_mask_and_knee_on_points_worked_out_by_hand():
    t = np.array([1.0, 2.0, 3.0, 2.5, 10.0])
    d = np.array([0.9, 0.3, 0.1, 0.5, 0.0])
    assert pareto_mask(t, d).tolist() == [True, True, True, False, True]  # (2.5, 0.5) is dominated by (2, 0.3)
    front = pd.DataFrame({"latency_ms": [1.0, 2.0, 3.0, 10.0], "degradation": [0.9, 0.3, 0.1, 0.0]}, index=[7, 8, 9, 10])
    # scaled to [0, 1]: (0, 1), (1/9, 1/3), (2/9, 1/9), (1, 0); distances to the ideal 1, 0.35, 0.25, 1
    assert knee(front) == 9


def test_degradation_is_zero_for_the_teacher_and_grows_with_the_gap():
    from coformer.modeling import HeadConfig

    embed = HeadConfig(hidden_size=4, final_norm=False, pooling="mean")
    x = torch.randn(3, 4)
    assert per_item(x, x, embed).abs().max() < 1e-6
    assert (per_item(-x, x, embed) - 2).abs().max() < 1e-6  # opposite vectors: 1 - cos = 2
    lm = HeadConfig(hidden_size=4, final_norm=True, projection="lm", num_outputs=5)
    logits, mask = torch.randn(2, 3, 5), torch.tensor([[1, 1, 0], [1, 1, 1]])
    assert per_item(logits, logits, lm, mask).shape == (5,)  # one KL per unpadded token
    assert per_item(logits, logits, lm, mask).abs().max() < 1e-6 and per_item(logits * 3, logits, lm, mask).min() > 0


def test_one_device_is_a_compressed_single_model_without_merges(canonical):
    """Whatever s was asked for, one device has no sync point: no merge, the head on its own stream."""
    importance = compute_importance(canonical.body, "magnitude")
    for sync in (0, 2):
        policy = build_policy(shape_of(canonical), importance, [DeviceShare(name="a", heads=1, neurons=1)], keep=0.75, sync=sync)
        assert policy.single and policy.sync == 1
        _, aggregator = decompose(canonical, policy)
        assert aggregator.config.merge_points == [] and len(aggregator.merges) == 0
    with pytest.raises(PolicyError, match="only device but narrows"):
        build_policy(shape_of(canonical), importance, [DeviceShare(name="a", heads=1, neurons=1, channels=0.5)])
    space = SearchSpace(tiny_fleet(canonical), shape_of(canonical), SearchConfig())
    device = {"heads": 0.5, "neurons": 0.5, "channels": 0.6, "use": False}
    params = {"devices": {"dev0": device | {"use": True}, "dev1": device, "dev2": device}, "keep": 0.8, "sync": 0, "dealing": "balanced"}
    alone = space.decode(params)
    assert alone.method == "Single-Edge" and alone.sync == 1 and alone.shares[0].channels == 1.0


def test_split_rows_keeps_order_and_batches():
    batches = [token_inputs(batch=3, seed=1), token_inputs(batch=4, seed=2)]
    fit, rest = split_rows(batches, 5)
    assert [len(b["input_ids"]) for b in fit] == [3, 2] and [len(b["input_ids"]) for b in rest] == [2]
    torch.testing.assert_close(rest[0]["input_ids"], batches[1]["input_ids"][2:])


@pytest.mark.parametrize("estimate", ["refit", "warm-start"])
def test_calibration_aware_degradation_recovers_what_a_refit_can(canonical, estimate):
    """On its own fit texts the refit can only bring the student closer; an exact split stays exact."""
    rows = [token_inputs(batch=8, length=9, seed=s) for s in (1, 2)]
    config = SearchConfig(texts=16, fit_texts=8, degradation=estimate, **WORKLOAD)
    evaluator = Evaluator(canonical, rows, tiny_fleet(canonical), config)
    evaluator.batches, evaluator.targets = evaluator.fit, [evaluator.teacher(b).output for b in evaluator.fit]  # measure where it fits
    shares = tuple(DeviceShare(name=f"dev{k}", heads=1, neurons=1) for k in range(2))
    raw, refitted = evaluator.degradation(evaluator.policy(Candidate(shares, 1.0, 0, "balanced")))
    assert refitted < raw
    exact = evaluator.degradation(evaluator.policy(Candidate(shares, 1.0, 1, "balanced")))
    assert max(exact) < 1e-3
    single = evaluator.degradation(evaluator.policy(Candidate(shares[:1], 0.5, 1, "balanced")))
    assert single[1] < single[0]  # no merge: the read-out of the last state is refitted instead
