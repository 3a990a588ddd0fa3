"""Device profiles, the catalog, fleets and the measurement of this machine."""

from __future__ import annotations

import json

import pytest
import yaml
from pydantic import ValidationError

from coformer.errors import CoFormerError
from coformer.fleet import (
    DeviceProfile,
    Fleet,
    FleetError,
    ModelDims,
    Workload,
    catalog_profile,
    device_types,
    fleet_names,
    link_types,
    load_fleet,
    load_profile,
)
from coformer.fleet.measure import local_fleet, measure_device
from coformer.fleet.timing import measure_link

GOOD = {
    "name": "board",
    "matmul_flops": 1e11,
    "memory_bandwidth": 1e10,
    "memory_bytes": 1e9,
    "link_bandwidth": 1e7,
    "link_rtt_s": 0.002,
    "active_power_w": 6.0,
    "idle_power_w": 2.0,
    "source": "catalog: test",
}


def write(tmp_path, data, name="fleet.yaml"):
    path = tmp_path / name
    path.write_text(json.dumps(data) if name.endswith(".json") else yaml.safe_dump(data))
    return path


def test_catalog_has_five_device_types_with_sourced_figures():
    types = device_types()
    assert len(types) >= 5
    assert {"jetson-nano", "jetson-xavier-nx", "jetson-orin-nano", "raspberry-pi-4", "raspberry-pi-5"} <= set(types)
    for kind, spec in types.items():
        for precision in spec["peak_flops"]:
            profile = catalog_profile(f"{kind}-{precision}", kind, "wifi5", precision)
            assert profile.matmul_flops == spec["peak_flops"][precision] * spec["matmul_efficiency"]
            assert profile.memory_bytes < spec["memory_total_bytes"]
            assert profile.source == f"catalog: {kind} ({precision})"


def test_every_figure_in_the_device_catalog_carries_a_source_comment():
    """Each number has a comment on its line, or sits right under the comment that covers it."""
    from importlib import resources

    lines = resources.files("coformer").joinpath("catalog", "devices.yaml").read_text().splitlines()
    for i, line in enumerate(lines):
        value = line.split("#")[0].split(":", 1)[-1].strip() if ":" in line.split("#")[0] else ""
        if not value.replace(".", "").replace("e+", "").replace("e-", "").isdigit():
            continue
        covered = "#" in line or any(lines[j].strip().startswith("#") for j in (i - 1, i - 2) if j >= 0)
        assert covered, f"line {i + 1} has a figure without a source: {line!r}"


def test_catalog_fleets_resolve():
    assert {"default", "jetson", "paper"} <= set(fleet_names())
    for name in ("default", "jetson"):
        fleet = load_fleet(name)
        assert len(fleet.devices) == 4 and len(set(fleet.names)) == 4
        assert fleet.aggregator.name in fleet.names and fleet.host_index == fleet.names.index(fleet.aggregator.name)
        assert fleet.arrays["remote"][fleet.host_index] == 0
    flops = [d.matmul_flops for d in load_fleet("jetson").devices]
    assert max(flops) / min(flops) > 5  # unequal boards
    assert {d.source for d in load_fleet("default").devices} == {"catalog: raspberry-pi-5 (fp32)", "catalog: raspberry-pi-4 (fp32)"}  # CPU boards
    paper = load_fleet("paper")
    assert len(paper.devices) == 4 and all(d.source.startswith("catalog: jetson") for d in paper.devices)


def test_fleet_round_trips_through_json(tmp_path):
    fleet = load_fleet("default")
    again = load_fleet(fleet.save(tmp_path / "resolved.json"))
    assert again == fleet
    assert again.arrays["matmul_flops"].tolist() == fleet.arrays["matmul_flops"].tolist()


def test_fleet_file_with_catalog_references_and_overrides(tmp_path):
    spec = {
        "name": "mine",
        "aggregator": {"name": "gateway", "type": "raspberry-pi-5", "link": {"bandwidth": 1e9, "rtt_s": 0.0}},
        "devices": [
            {"name": "a", "type": "raspberry-pi-4", "link": "ethernet-1g", "memory_bytes": 5e7},
            GOOD | {"name": "b"},
        ],
    }
    fleet = load_fleet(write(tmp_path, spec))
    assert fleet.host_index == -1 and fleet.aggregator.name == "gateway"
    assert fleet.devices[0].memory_bytes == 5e7
    assert fleet.devices[0].link_bandwidth == link_types()["ethernet-1g"]["bandwidth"]
    assert fleet.devices[1] == DeviceProfile(**GOOD | {"name": "b"})


@pytest.mark.parametrize(
    "device, field",
    [
        ({"link_bandwidth": -5.0}, "devices.0.link_bandwidth"),
        ({"memory_bandwidth": 0}, "devices.0.memory_bandwidth"),
        ({"link_rtt_s": -0.1}, "devices.0.link_rtt_s"),
        ({"matmul_flops": "fast"}, "devices.0.matmul_flops"),
        ({"colour": "red"}, "devices.0.colour"),
    ],
)
def test_bad_profile_fields_are_named(tmp_path, device, field):
    path = write(tmp_path, {"name": "bad", "aggregator": "board", "devices": [GOOD | device]})
    with pytest.raises(FleetError, match=field.replace(".", r"\.")):
        load_fleet(path)


def test_missing_field_is_named(tmp_path):
    broken = {k: v for k, v in GOOD.items() if k != "memory_bytes"}
    with pytest.raises(FleetError, match=r"devices\.0\.memory_bytes: Field required"):
        load_fleet(write(tmp_path, {"name": "bad", "aggregator": "board", "devices": [broken]}, "fleet.json"))


def test_idle_power_above_active_is_rejected():
    with pytest.raises(FleetError, match="idle_power_w=9.0 exceeds active_power_w=6.0"):
        DeviceProfile(**GOOD | {"idle_power_w": 9.0})


def test_negative_bandwidth_on_a_profile_names_the_field():
    with pytest.raises(ValidationError, match="link_bandwidth"):
        DeviceProfile(**GOOD | {"link_bandwidth": -1.0})


def test_duplicate_device_names_are_rejected(tmp_path):
    path = write(tmp_path, {"name": "twins", "aggregator": "board", "devices": [GOOD, GOOD]})
    with pytest.raises(FleetError, match=r"names must be unique, \['board'\]"):
        load_fleet(path)


def test_unknown_catalog_names_are_rejected(tmp_path):
    with pytest.raises(FleetError, match="unknown fleet 'nowhere'.*default"):
        load_fleet("nowhere")
    with pytest.raises(FleetError, match=r"devices\.0\.type: unknown device type 'pi-9'"):
        load_fleet(write(tmp_path, {"name": "x", "aggregator": "a", "devices": [{"name": "a", "type": "pi-9", "link": "wifi5"}]}))
    with pytest.raises(FleetError, match=r"devices\.0\.link: unknown link 'carrier-pigeon'"):
        load_fleet(write(tmp_path, {"name": "x", "aggregator": "a", "devices": [{"name": "a", "type": "jetson-nano", "link": "carrier-pigeon"}]}))
    with pytest.raises(FleetError, match=r"aggregator: 'ghost' is not a device"):
        load_fleet(write(tmp_path, {"name": "x", "aggregator": "ghost", "devices": [GOOD]}))
    with pytest.raises(FleetError, match="no fleet file"):
        load_fleet(tmp_path / "absent.yaml")


def test_subset_and_single_device():
    fleet = load_fleet("jetson")
    pair = fleet.subset(["pi4", "pi5"])
    assert pair.names == ["pi4", "pi5"] and pair.host_index == -1 and pair.aggregator == fleet.aggregator
    alone = fleet.single("pi5")
    assert alone.names == ["pi5"] and alone.host_index == 0
    with pytest.raises(FleetError, match="no device"):
        fleet.subset(["pi9"])


def test_load_profile_errors(tmp_path):
    with pytest.raises(FleetError, match="coformer profile"):
        load_profile(tmp_path / "device.json")
    path = tmp_path / "device.json"
    path.write_text(json.dumps(GOOD | {"memory_bytes": -1}))
    with pytest.raises(FleetError, match="memory_bytes"):
        load_profile(path)


def test_loopback_link_is_measured():
    bandwidth, rtt = measure_link(payload_bytes=2**20, pings=20)
    assert bandwidth > 1e6 and 0 < rtt < 0.1


def test_measure_device_profiles_this_machine_at_the_model_shapes():
    dims = ModelDims(num_layers=2, num_heads=4, head_dim=16, ffn_size=128, hidden_size=64, vocab_size=100, causal=True)
    m = measure_device(dims, Workload(batch=1, seq_len=16), repeats=2, link=(1e8, 1e-3), active_power_w=5, idle_power_w=1)
    p = m.profile
    assert p.source.startswith("measured on") and p.link_bandwidth == 1e8 and p.active_power_w == 5
    assert p.matmul_flops > 1e8 and p.memory_bandwidth > 1e8 and p.block_overhead_s > 0
    assert len(m.blocks) == 3 * 4 and all(b["measured_s"] > 0 and b["predicted_s"] > 0 for b in m.blocks)
    assert any(b["decode"] for b in m.blocks)  # causal models are also timed one decode step at a time
    fleet = local_fleet(p, devices=2)
    assert fleet.names == ["core0", "core1"] and fleet.host_index == 0


def test_measure_device_refuses_cpu_clock_with_threads():
    dims = ModelDims(num_layers=1, num_heads=1, head_dim=8, ffn_size=8, hidden_size=8, vocab_size=10)
    with pytest.raises(CoFormerError, match="clock='wall'"):
        measure_device(dims, Workload(), threads=2, clock="cpu")


def test_fleet_needs_a_device():
    with pytest.raises(ValidationError, match="devices"):
        Fleet(name="empty", devices=[], aggregator=DeviceProfile(**GOOD))


def test_profile_command_writes_a_loadable_profile(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from coformer.cli import app

    monkeypatch.chdir(tmp_path)
    small = ["profile.seq_len=16", "profile.repeats=2", "profile.whole_machine=false", f"base.tracking_uri=sqlite:///{tmp_path}/m.db"]
    args = ["profile", "--out", str(tmp_path / "profile"), *[a for s in small for a in ("--set", s)]]
    result = CliRunner().invoke(app, args, env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "core_matmul_gflops" in result.output and load_profile(tmp_path / "profile" / "device.json").source.startswith("measured on")
    assert load_fleet(tmp_path / "profile" / "fleet.json").name == "default"
