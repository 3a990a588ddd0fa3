"""Runtimes from settings: what the BentoML services construct in ``__init__``."""

from __future__ import annotations

import os

import torch

from coformer.errors import CoFormerError
from coformer.modeling import load_aggregator, load_submodel
from coformer.serving.aggregate import AggregatorRuntime
from coformer.serving.artifacts import DEPLOYMENT, PROCESSOR, aggregator_folder, node_folder, policy_and_configs, resolve
from coformer.serving.client import Observer
from coformer.serving.config import AggregatorSettings, Deployment, NodeSettings
from coformer.serving.frontend import Frontend, load_processor
from coformer.serving.node import NodeRuntime


def deployment_of(path: str | None, artifacts=None) -> Deployment:
    """The deployment file given, else the one packaged with the artifacts, else defaults."""
    if path:
        return Deployment.load(path)
    if artifacts is not None and (artifacts / DEPLOYMENT).is_file():
        return Deployment.load(artifacts / DEPLOYMENT)
    return Deployment()


def pin(core: int | None, threads: int) -> None:
    """One node per core, one torch thread (see STACK.md, Threads)."""
    if core is not None:
        os.sched_setaffinity(0, {core})
    torch.set_num_threads(threads)


def build_node(settings: NodeSettings) -> NodeRuntime:
    if not settings.node_token:
        raise CoFormerError("the node needs a shared token: set COFORMER_NODE_TOKEN (the aggregator sends the same)")
    pin(settings.core, settings.threads)
    root = resolve(settings.artifacts)
    policy, _ = policy_and_configs(root)
    return NodeRuntime(load_submodel(node_folder(root, settings.node_name)), deployment_of(settings.deployment, root), policy.shape)


def build_frontend(settings: AggregatorSettings, observer: Observer | None = None) -> Frontend:
    pin(None, settings.threads)
    root = resolve(settings.artifacts)
    deployment = deployment_of(settings.deployment, root)
    policy, configs = policy_and_configs(root)
    token = settings.node_token or deployment.token
    if not token:
        raise CoFormerError("no node token: set COFORMER_NODE_TOKEN or `token:` in the deployment file")
    runtime = AggregatorRuntime(load_aggregator(aggregator_folder(root)), policy, configs, deployment, token, observer)
    processor = load_processor(settings.processor or (root / PROCESSOR), configs[0].embedding)
    return Frontend(runtime, processor)
