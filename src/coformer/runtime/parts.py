"""What one device process holds: its part of the student, loaded from the artifacts alone.

A process loads only the tensors of the modules it runs (safetensors reads them one by one), so
its peak memory is what it holds: a pipeline stage its blocks, a device whose inputs are embedded
by the aggregator no embedding table, the gateway only the embeddings and the aggregator.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import safe_open
from torch import nn

from coformer.decompose.policy import Policy
from coformer.modeling import Aggregator, SubModel, SubModelConfig, load_aggregator
from coformer.modeling.artifacts import CONFIG, WEIGHTS, read_config, same_weights
from coformer.modeling.heads import Readout
from coformer.runtime.plan import RuntimeFailure, RuntimePlan


class Received(nn.Module):
    """Stands in for a device's embedding when another process embeds: returns the stream it sent."""

    def forward(self, inputs: dict[str, torch.Tensor], past: int = 0) -> torch.Tensor:
        return inputs["inputs_embeds"]  # (B, T, w)


@dataclass
class Role:
    """One rank's modules and its place in the data flow."""

    rank: int
    plan: RuntimePlan
    num_layers: int  # L blocks of the model
    sync: int  # the policy's sync interval (pipeline: unused)
    model: SubModel | None = None  # this rank's sub-model or stage (None: the gateway)
    aggregator: Aggregator | None = None  # on the rank that merges and applies the head
    embeddings: list[nn.Module] = field(default_factory=list)  # gateway: every device's embedding (equal ones shared)
    blocks: range = range(0)  # blocks this rank runs
    readout: Readout = field(default_factory=Readout)  # what of the last state travels to the head
    group: object = None  # process group of the device ranks (tensor parallelism with a gateway)

    @property
    def name(self) -> str:
        if self.model is None:
            return "gateway"
        return f"stage {self.rank}" if self.plan.mode == "pipeline" else self.model.config.name

    def parameter_bytes(self) -> int:
        modules = [m for m in (self.model, self.aggregator) if m is not None] + list({id(e): e for e in self.embeddings}.values())
        return sum(t.numel() * t.element_size() for m in modules for t in m.state_dict().values())


def load_part(directory: Path, blocks: range | None = None, embed: bool = True) -> SubModel:
    """A sub-model holding only ``blocks`` (default all) and, if ``embed``, its embedding."""
    config = SubModelConfig.model_validate(json.loads((directory / CONFIG).read_text())["config"])
    with torch.device("meta"):
        model = SubModel(config)
    blocks = range(config.num_layers) if blocks is None else blocks
    for i in range(config.num_layers):
        if i not in blocks:
            model.blocks[i] = nn.Identity()  # never called: this rank does not run block i
    if not embed:
        model.embed = Received()
    wanted = model.state_dict().keys()
    with safe_open(directory / WEIGHTS, "pt") as f:
        state = {k: f.get_tensor(k) for k in f.keys() if k in wanted}
    model.load_state_dict(state, strict=True, assign=True)
    model.channel_index = torch.tensor(config.channels, dtype=torch.long)
    return model.eval()


def check_folder(plan: RuntimePlan) -> Policy:
    """The folder's policy, if the plan can run it (checked before any process starts)."""
    folder = Path(plan.folder)
    policy = Policy.load(folder / "policy.json")
    L = policy.shape.num_layers
    if plan.mode == "pipeline" and (len(policy.devices) != 1 or policy.sync != 1 or sum(plan.stages) != L):
        raise RuntimeFailure(
            f"pipeline stages {plan.stages} over {folder}: need a one-device, sync 1 folder (the full model) "
            f"and stages summing to its {L} blocks"
        )
    if plan.mode == "ensemble" and len(policy.devices) != plan.devices:
        raise RuntimeFailure(f"{folder} holds {len(policy.devices)} sub-models but the plan says devices={plan.devices}")
    return policy


def load_role(plan: RuntimePlan, rank: int) -> Role:
    folder = Path(plan.folder)
    policy = check_folder(plan)
    names = [d.name for d in policy.devices]
    role = Role(rank, plan, policy.shape.num_layers, policy.sync)
    if plan.mode == "pipeline":
        start = sum(plan.stages[:rank])
        role.blocks = range(start, start + plan.stages[rank])
        role.model = load_part(folder / "devices" / names[0], role.blocks, embed=rank == 0)
        role.aggregator = load_aggregator(folder / "aggregator") if rank == plan.world - 1 else None
        return role
    role.readout = read_config(folder / "aggregator", "aggregator")[1].head.readout
    device = rank - int(plan.gateway)
    if device >= 0:
        role.model = load_part(folder / "devices" / names[device], embed=not plan.gateway)
        role.blocks = range(role.num_layers)
    if rank == 0:
        role.aggregator = load_aggregator(folder / "aggregator").eval()
        if plan.gateway:
            role.embeddings = shared_embeddings([folder / "devices" / n for n in names])
    return role


def shared_embeddings(directories: list[Path]) -> list[nn.Module]:
    """Every device's embedding; devices whose tables are equal (frozen in calibration) share one."""
    out: list[nn.Module] = []
    for directory in directories:
        embed = load_part(directory, blocks=range(0)).embed
        out.append(next((e for e in out if same_weights(e, embed)), embed))
    return out
