"""Helpers for the serving tests: a saved tiny decomposition, and nodes in this process behind
httpx transports (the fleet logic without servers) or as real ``bentoml serve`` processes."""

from __future__ import annotations

from pathlib import Path

import httpx
import torch
from conftest import tiny_bert, tiny_gpt2, tiny_vit

from coformer.adapters import canonicalize
from coformer.calibrate.student import load_student, save_student
from coformer.decompose import DeviceShare, build_policy, compute_importance, decompose, shape_of
from coformer.executor import Ensemble
from coformer.modeling import load_aggregator, load_submodel
from coformer.serving.aggregate import AggregatorRuntime
from coformer.serving.artifacts import policy_and_configs
from coformer.serving.config import Deployment
from coformer.serving.errors import ServingError
from coformer.serving.node import NodeRuntime
from coformer.serving.security import check_token

TOKEN = "test-node-token"
MODELS = {"gpt2": lambda: tiny_gpt2(layers=4), "bert": tiny_bert, "vit": lambda: tiny_vit(classifier=True)}


def saved_student(folder: Path, family: str, sync: int, shares=(3, 1), pooling: str | None = None) -> tuple[Path, Ensemble]:
    """A decomposition of a tiny random model written in the calibrated layout, and its executor."""
    canonical = canonicalize(MODELS[family](), pooling=pooling)
    devices = [DeviceShare(name=f"d{k}", heads=s, neurons=s + 0.5) for k, s in enumerate(shares)]
    policy = build_policy(shape_of(canonical), compute_importance(canonical.body, "magnitude"), devices, sync=sync)
    save_student(folder, policy, Ensemble(*decompose(canonical, policy), sync=sync))
    return folder, load_student(folder)[1].eval()


class InProcessNode:
    """A node runtime behind an httpx transport; ``down`` makes it refuse connections."""

    def __init__(self, folder: Path, name: str, deployment: Deployment):
        policy, _ = policy_and_configs(folder)
        self.folder, self.name, self.deployment = folder, name, deployment
        self.runtime = NodeRuntime(load_submodel(folder / "devices" / name), deployment, policy.shape)
        self.down = False
        self.answers: list[bytes] = []  # every body it answered with, in order

    def restart(self) -> None:
        """A fresh process: no runs, no KV caches."""
        self.runtime = NodeRuntime(self.runtime.model, self.deployment, self.runtime.shape)
        self.down = False

    def handle(self, request: httpx.Request) -> httpx.Response:
        if self.down:
            raise httpx.ConnectError("connection refused", request=request)
        try:
            check_token(request.headers.get("authorization"), TOKEN, f"node {self.name}")
            self.answers.append(self.runtime.handle(request.content))
            return httpx.Response(200, content=self.answers[-1])
        except ServingError as e:
            return httpx.Response(e.status, json={"error": str(e)})


def in_process_fleet(folder: Path, **deployment) -> tuple[AggregatorRuntime, dict[str, InProcessNode]]:
    policy, configs = policy_and_configs(folder)
    names = [d.name for d in policy.devices]
    dep = Deployment(nodes={n: f"http://{n}" for n in names}, **{"backoff_s": 0.001, "down_s": 0.0} | deployment)
    nodes = {n: InProcessNode(folder, n, dep) for n in names}
    transports = {n: httpx.MockTransport(node.handle) for n, node in nodes.items()}
    return AggregatorRuntime(load_aggregator(folder / "aggregator"), policy, configs, dep, TOKEN, transports=transports), nodes


@torch.no_grad()
def greedy(student: Ensemble, ids: torch.Tensor, mask: torch.Tensor, steps: int) -> torch.Tensor:
    """The in-process greedy loop with per-device KV caches (left padding through position ids)."""
    caches, fed, new = student.new_caches(), 0, []
    for _ in range(steps):
        positions = (mask.cumsum(1) - 1).clamp(min=0)
        out = student({"input_ids": ids[:, fed:], "attention_mask": mask, "position_ids": positions[:, fed:]}, caches=caches).output
        fed = ids.shape[1]
        token = out[:, -1].argmax(-1)
        new.append(token)
        ids, mask = torch.cat([ids, token[:, None]], 1), torch.cat([mask, torch.ones_like(mask[:, :1])], 1)
    return torch.stack(new, 1)  # (B, steps)
