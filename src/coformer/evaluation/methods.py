"""The methods the evaluation compares, each a student folder the runtime can run (CoFormer paper's
names in brackets):

* ``full``: the whole model on one device (a one-device, s = 1 folder: the original, exactly);
* ``pipe-edge`` [Pipe-Edge]: the same folder cut into contiguous blocks per device, in proportion
  to device speed (the measured devices are equal cores, so equal stages);
* ``distri-edge`` [Distri-Edge]: every unit dealt out equally, all-reduced after every sub-layer;
* ``single-edge`` [Single-Edge]: one device, units pruned by importance to the largest kept fraction
  that fits the fleet's biggest memory budget, calibrated at the baselines' budget;
* ``aggregate-edge`` [Aggregate-Edge]: CoFormer s = 0 on an equal split, calibrated at that budget;
* ``coformer``: the searched, calibrated policy (whatever its s);
* ``coformer-gateway``: Aggregate-Edge with the embedding looked up once at a gateway process.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from coformer.calibrate import CalibrationConfig, CalibrationData, build_student, calibrate, save_student
from coformer.decompose import DeviceShare, Importance, Policy, build_policy, quotas, shape_of
from coformer.errors import ArtifactError, InfeasibleFleetError
from coformer.executor import Teacher
from coformer.fleet import DeviceProfile, Fleet, ModelDims, UnitCounts, Workload, estimate
from coformer.modeling.artifacts import read_config

PAPER = {
    "full": "full model, 1 device",
    "pipe-edge": "Pipe-Edge (layer-wise pipeline)",
    "distri-edge": "Distri-Edge (tensor parallel, s=1)",
    "single-edge": "Single-Edge (one compressed model)",
    "aggregate-edge": "Aggregate-Edge (CoFormer s=0, equal split)",
    "coformer": "CoFormer (searched, calibrated)",
    "coformer-gateway": "Aggregate-Edge, embedding at a gateway",
}


@dataclass
class Method:
    key: str  # one of PAPER
    folder: Path  # student folder the runtime loads
    policy: Policy
    budget: str  # the calibration this row had, in words
    exact: bool = False  # equals the teacher by construction (all units, summed every sub-layer)
    mode: str = "ensemble"  # runtime mode: ensemble | pipeline
    stages: tuple[int, ...] = ()  # pipeline: blocks per device
    gateway: bool = False  # the embedding runs once at a gateway process
    measurable: bool = True  # False: more devices than cores; the cost model's prediction only

    @property
    def label(self) -> str:
        return PAPER[self.key]

    @property
    def devices(self) -> int:
        return len(self.stages) if self.mode == "pipeline" else len(self.policy.devices)


def core_shares(n: int) -> list[DeviceShare]:
    """Equal shares for ``n`` measured devices (this machine's identical cores)."""
    return [DeviceShare(name=f"core{k}", heads=1.0, neurons=1.0) for k in range(n)]


def fitting_keep(dims: ModelDims, fleet: Fleet, workload: Workload, devices: int) -> tuple[str, float]:
    """(device, kept fraction): the largest one-device model that fits the fleet's biggest memory
    budget and is no larger than the largest sub-model of an equal ``devices``-way split (DESIGN
    section 7: a compressed model of a sub-model's size; a budget the whole model fits in would
    otherwise make Single-Edge the full model)."""
    device = max(fleet.devices, key=lambda d: d.memory_bytes)
    alone = fleet.single(device.name)
    members = [device.model_copy(update={"name": f"{device.name}-{k}"}) for k in range(devices)]
    copies = Fleet(name=f"{devices} x {device.name}", devices=members, aggregator=members[0])
    split = estimate(UnitCounts.split(dims, [1.0] * devices, sync=0), dims, copies, workload)
    budget = min(device.memory_bytes, float(split.memory_bytes.max()))
    for keep in np.round(np.arange(1.0, 0.0, -0.01), 2):
        if estimate(UnitCounts.split(dims, [1.0], sync=0, keep=float(keep)), dims, alone, workload).memory_bytes.max() <= budget:
            return device.name, float(keep)
    raise InfeasibleFleetError(
        f"no one-device model of {dims.num_layers} blocks fits '{device.name}' ({device.memory_bytes / 1e6:.0f} MB): "
        "its embedding alone is too large; give evaluate.single_keep explicitly"
    )


def scaled(config: CalibrationConfig, budget: float) -> CalibrationConfig:
    """The calibrate section's recipe with ``budget`` of its steps (no resume checkpoints)."""
    return config.model_copy(
        update={
            "steps_per_stage": round(config.steps_per_stage * budget),
            "final_steps": max(1, round(config.final_steps * budget)),
            "checkpoint_every": 0,
        }
    )


def describe_budget(config: CalibrationConfig) -> str:
    warm = "least-squares warm start + " if config.warm_start else ""
    return f"{warm}{config.steps_per_stage} steps/stage + {config.final_steps} final (batch {config.batch_size})"


class Builder:
    """Builds and calibrates the baselines' folders under one work folder."""

    def __init__(self, loaded, importance: Importance, data: CalibrationData | None, recipe: CalibrationConfig, budget: float, work: Path):
        self.canonical, self.importance, self.data = loaded.canonical, importance, data
        self.teacher = Teacher(self.canonical.body, self.canonical.head).eval().requires_grad_(False)
        self.recipe, self.budget, self.work = recipe, budget, work

    def policy(self, shares: list[DeviceShare], sync: int, keep: float = 1.0) -> Policy:
        return build_policy(shape_of(self.canonical), self.importance, shares, keep=keep, sync=sync)

    def exact(self, key: str, shares: list[DeviceShare], sync: int) -> Method:
        policy = self.policy(shares, sync)
        folder = save_student(self.work / key, policy, build_student(self.canonical, policy))
        return Method(key, folder, policy, "none needed (exact)", exact=True)

    def calibrated(self, key: str, policy: Policy) -> Method:
        """A baseline at the baselines' budget (0: as sliced, uncalibrated)."""
        student, folder = build_student(self.canonical, policy), self.work / key
        if self.budget == 0 or self.data is None:
            save_student(folder, policy, student)
            return Method(key, folder, policy, "uncalibrated")
        config = scaled(self.recipe, self.budget)
        calibrate(self.teacher, student, policy, self.data, config, folder, tracking_uri=None, progress=False, restart_on_change=True)
        return Method(key, folder, policy, f"{self.budget:g} x calibrate: {describe_budget(config)}")


def build_methods(
    builder: Builder,
    cores: int,
    single: tuple[str, float] | None,
    calibrated: Path | None,
    searched: Policy | None,
    recipe: CalibrationConfig,
    wanted: list[str],
) -> list[Method]:
    """The ``wanted`` methods' folders: exact ones sliced, baselines calibrated, the searched one as
    given (only with a calibrated folder, whose policy ``searched`` is)."""
    methods = []
    if {"full", "pipe-edge"} & set(wanted):
        full = builder.exact("full", [DeviceShare(name="core0", heads=1.0, neurons=1.0)], sync=1)
        layers = builder.canonical.body.config.num_layers
        stages = tuple(quotas(layers, [1.0] * cores))
        methods += [full, Method("pipe-edge", full.folder, full.policy, full.budget, exact=True, mode="pipeline", stages=stages)]
    if "distri-edge" in wanted:
        methods.append(builder.exact("distri-edge", core_shares(cores), sync=1))
    if "single-edge" in wanted:
        name, keep = single
        methods.append(builder.calibrated("single-edge", builder.policy([DeviceShare(name=name, heads=1.0, neurons=1.0)], sync=0, keep=keep)))
    searched_budget = f"the calibrate stage: {describe_budget(recipe)}"
    if {"aggregate-edge", "coformer-gateway"} & set(wanted):
        equal = builder.policy(core_shares(cores), sync=0)
        if searched is not None and same_split(searched, equal):
            aggregate = Method("aggregate-edge", calibrated, searched, searched_budget)
        else:
            aggregate = builder.calibrated("aggregate-edge", equal)
        methods.append(aggregate)
        methods.append(Method("coformer-gateway", aggregate.folder, aggregate.policy, aggregate.budget, gateway=True))
    if searched is not None:
        methods.append(Method("coformer", calibrated, searched, searched_budget, measurable=len(searched.devices) <= cores))
    return [m for m in methods if m.key in wanted]


def searched_policy(folder: Path, canonical) -> Policy:
    """The calibrated folder's policy, refused unless it was made from the evaluated model's shape
    and head (another model's sub-models would be scored against the wrong teacher)."""
    policy = Policy.load(folder / "policy.json")
    head = read_config(folder / "aggregator", expected="aggregator")[1].head
    if policy.shape != shape_of(canonical) or head != canonical.head.config:
        raise ArtifactError(
            f"{folder} holds a decomposition of another model ({policy.shape.num_layers} blocks, width {policy.shape.hidden_size}, "
            f"{head.projection} head) than base.model ({canonical.config.num_layers} blocks, width {canonical.config.width}, "
            f"{canonical.head.config.projection} head): calibrate this model first, or evaluate without that folder"
        )
    return policy


def same_split(a: Policy, b: Policy) -> bool:
    """Same sync and the same unit counts and widths per device (which units may differ)."""
    x, y = UnitCounts.from_policy(a), UnitCounts.from_policy(b)
    return x.sync == y.sync and all(np.array_equal(getattr(x, f), getattr(y, f)) for f in ("heads", "neurons", "widths"))


def local_fleet_of(profile: DeviceProfile, devices: int, rate_mbit: float | None, gateway: bool = False) -> Fleet:
    """``devices`` copies of this machine's one-core profile on the given link; core 0 aggregates,
    or with ``gateway`` a process of its own does (every device then sends over the link)."""
    link = {} if rate_mbit is None else {"link_bandwidth": rate_mbit * 1e6 / 8}
    members = [profile.model_copy(update={"name": f"core{k}", **link}) for k in range(devices)]
    host = profile.model_copy(update={"name": "gateway", **link}) if gateway else members[0]
    return Fleet(name="measured", devices=members, aggregator=host)
